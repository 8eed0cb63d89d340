"""The haystack as a token stream: text split into segments at the boundaries real text
has, tokenized once per run, grown on demand, with occurrence checks over its first N tokens.

Segments end at ASCII sentence ends (``.``/``!``/``?`` before whitespace), CJK sentence ends
(``。``/``！``/``？``, no space needed), line breaks and paragraph breaks; each segment keeps the
whitespace before it, so segment starts are natural token boundaries. Sources: ``prose``
(niah.prose), ``noise`` (one paragraph repeated), a NeedleSource (niah.haystack_needles) or a
.txt file or folder of them (niah.haystack_files), repeated when too short.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import islice
from pathlib import Path

import numpy as np

from .errors import NiahError
from .haystack_files import haystack_files
from .haystack_needles import NeedleSource
from .prose import NOISE_PARAGRAPH, prose_sentences

_BATCH = 4096
_BREAK = re.compile(r"\s*\n\s*")
_SENTENCE_END = re.compile(
    r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s|$)|[\u3002\uff01\uff1f\uff61]+[\u300d\u300f\u201d\u2019\uff09)\]]*"
)


def _read_text_source(path: Path) -> str:
    """The text of a file or folder haystack: the files niah.haystack_files lists (the same ones
    the run identity hashes), joined by line breaks."""
    parts = []
    for f in haystack_files(path):
        try:
            parts.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise NiahError(
                f"haystack file {str(f)!r} is not UTF-8 text: convert it (iconv -t utf-8)"
            ) from None
        except OSError as exc:
            raise NiahError(
                f"cannot read haystack file {str(f)!r} ({exc.strerror}): check permissions"
            ) from None
    text = "\n".join(parts)
    if not text.strip():
        raise NiahError(
            f"haystack {str(path)!r} is empty: give a file with text or use --haystack prose"
        )
    return text


def _break_separator(ws: str) -> str:
    """A whitespace run holding line breaks: one or two newlines, then the indentation."""
    return "\n" * min(ws.count("\n"), 2) + ws[ws.rindex("\n") + 1 :]


def split_segments(text: str) -> list[tuple[str, str]]:
    """Split text into (separator, segment) pairs at sentence ends, line and paragraph breaks.

    The separator is the whitespace before the segment (line breaks kept, at most one blank
    line); the first segment gets a line break, as if the text repeated after itself.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out: list[tuple[str, str]] = []
    pieces = _BREAK.split(text)
    breaks = ["\n"] + [_break_separator(m.group()) for m in _BREAK.finditer(text)]
    for line, sep in zip(pieces, breaks):
        start = 0
        ends = [m.end() for m in _SENTENCE_END.finditer(line)] + [len(line)]
        for end in ends:
            chunk = line[start:end]
            start = end
            body = chunk.lstrip()
            if not body:
                continue
            lead = chunk[: len(chunk) - len(body)]
            out.append((sep + lead if sep else lead, body.rstrip()))
            sep = ""
    return out


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None:  # the Rust tokenizer: batch encoding on all cores
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def match_text(text: str) -> str:
    """Text as occurrence checks see it: NFKC, lower case, whitespace runs as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


class Haystack:
    """A token stream of whole segments, grown on demand, tokenized once per run.

    Keeps each segment's text too, so occurrence checks can ask whether a phrase or a value
    lies within the first N tokens (`occurs`).
    """

    def __init__(self, tokenizer, *, source: str | NeedleSource = "prose", seed: int = 0):
        self.tokenizer = tokenizer
        self.needle_form = isinstance(source, NeedleSource)  # made of distractor needles
        self.source = source.name if self.needle_form else source
        self._ids: list[np.ndarray] = []
        self._starts: list[int] = []
        self._texts: list[str] = []
        self._length = 0
        self._cycle: list[tuple[str, list[int]]] | None = None
        self._cycle_pos = 0
        self.full_text: str | None = None  # the whole source, where it is finite
        if self.needle_form:
            self._sentences = source.sentences(seed=seed)
        elif source == "prose":
            self._sentences = prose_sentences(seed=seed)
        else:
            text = NOISE_PARAGRAPH if source == "noise" else _read_text_source(Path(source))
            segments = [sep + s for sep, s in split_segments(text)]
            self._cycle = list(zip(segments, _encode_batch(tokenizer, segments)))
            if not any(ids for _, ids in self._cycle):
                raise NiahError(f"haystack {source!r} encodes to no tokens: give a file with text")
            self.full_text = match_text(text)
        self._flat: np.ndarray | None = None
        self._flat_starts: np.ndarray | None = None
        self._match: str = ""
        self._match_ends: list[int] = []

    def _next_batch(self, missing: int) -> list[tuple[str, list[int]]]:
        if self._cycle is not None:  # whole segments until `missing` tokens are covered
            batch, got = [], 0
            while got < missing:
                item = self._cycle[self._cycle_pos]
                self._cycle_pos = (self._cycle_pos + 1) % len(self._cycle)
                batch.append(item)
                got += len(item[1])
            return batch
        texts = [" " + s for s in islice(self._sentences, _BATCH)]
        return list(zip(texts, _encode_batch(self.tokenizer, texts)))

    def ensure(self, n_tokens: int) -> None:
        """Grow the stream to at least n_tokens (plus the rest of its last segment)."""
        while self._length < n_tokens:
            for text, ids in self._next_batch(n_tokens - self._length):
                if not ids:
                    continue
                self._starts.append(self._length)
                self._ids.append(np.asarray(ids, dtype=np.int32))
                self._texts.append(text)
                self._length += len(ids)
            self._flat = None

    @property
    def ids(self) -> np.ndarray:
        if self._flat is None:
            self._flat = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int32)
            self._flat_starts = np.asarray(self._starts + [self._length], dtype=np.int64)
            self._ids = [self._flat]
        return self._flat

    @property
    def starts(self) -> np.ndarray:
        """Token index of every segment start, plus the stream's end."""
        _ = self.ids  # the property builds _flat_starts on first use
        return self._flat_starts

    def occurs(self, text: str, n_tokens: int) -> bool:
        """Whether `text` (as `match_text` sees it) lies in the segments covering the first
        n_tokens of the stream. Deterministic: depends on n_tokens, not on how far the stream
        has grown."""
        needle = match_text(text)
        if not needle:
            return False
        self.ensure(n_tokens)
        k = int(np.searchsorted(self.starts, n_tokens, side="left"))
        while len(self._match_ends) < min(k, len(self._texts)):
            piece = match_text(self._texts[len(self._match_ends)])
            self._match += " " + piece
            self._match_ends.append(len(self._match))
        end = self._match_ends[k - 1] if k else 0
        return self._match.find(needle, 0, end) >= 0
