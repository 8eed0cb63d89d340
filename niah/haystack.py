"""Token-exact needle-in-a-haystack prompts in the model's own tokenizer.

The chat template is rendered once around a marker, so the prompt is
``head + body + tail`` where head/tail are the template (with the intro, the question and the
answer prefix) and body is the haystack with the needle sentence spliced in. The haystack is
tokenized once per run, one sentence at a time (each with its leading space, so sentence starts
are natural token boundaries); a prompt of N tokens is then assembled by slicing and
concatenating token ids, which makes its length exact by construction and its cost a few array
copies. The needle goes to the sentence boundary nearest the requested depth.

Sources: ``prose`` (seeded generator, niah.prose), ``noise`` (one paragraph repeated) or a path
to a .txt file or a folder of .txt files (repeated when too short).
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .config import DEFAULT_ANSWER_PREFIX, DEFAULT_INTRO, DEFAULT_NEEDLE, DEFAULT_QUESTION
from .errors import NiahError
from .prose import NOISE_PARAGRAPH, prose_sentences

MARKER = "\u2063NIAH-HAYSTACK\u2063"
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_BATCH = 4096

_ADJECTIVES = [
    "amber", "brisk", "crimson", "dusky", "eager", "frosty", "gentle", "hollow", "ivory",
    "jolly", "keen", "lunar", "mellow", "nimble", "olive", "plucky", "quiet", "rustic",
    "silver", "tawny", "umber", "vivid", "wistful", "zesty",
]
_ANIMALS = [
    "albatross", "badger", "cheetah", "dolphin", "ermine", "falcon", "gazelle", "heron",
    "ibex", "jackal", "koala", "lemur", "marmot", "narwhal", "ocelot", "pelican", "quokka",
    "raven", "salamander", "tapir", "urchin", "vulture", "walrus", "yak",
]


def needle_value(*, kind: str, seed: int, key: str) -> str:
    """The needle value for one trial: the same seed and key give the same value."""
    rng = random.Random(f"niah-value-{seed}-{key}")
    if kind == "number":
        return str(rng.randint(1_000_000, 9_999_999))
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if kind == "words":
        return f"{rng.choice(_ADJECTIVES)} {rng.choice(_ANIMALS)}"
    raise NiahError(f"unknown value kind {kind!r}: use number, uuid or words")


def _read_text_source(path: Path) -> str:
    if not path.exists():
        raise NiahError(f"haystack path {str(path)!r} does not exist: give a .txt file or a folder of them")
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise NiahError(f"haystack folder {str(path)!r} has no .txt files: add some or use --haystack prose")
    parts = []
    for f in files:
        try:
            parts.append(f.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise NiahError(f"haystack file {str(f)!r} is not UTF-8 text: convert it (iconv -t utf-8)") from None
        except OSError as exc:
            raise NiahError(f"cannot read haystack file {str(f)!r} ({exc.strerror}): check permissions") from None
    text = "\n".join(parts)
    if not text.strip():
        raise NiahError(f"haystack {str(path)!r} is empty: give a file with text or use --haystack prose")
    return text


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (whitespace collapsed)."""
    text = " ".join(text.split())
    return [s for s in _SENTENCE_SPLIT.split(text) if s]


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None:  # the Rust tokenizer: batch encoding on all cores
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


class Haystack:
    """A token stream of whole sentences, grown on demand, tokenized once per run."""

    def __init__(self, tokenizer, *, source: str = "prose", seed: int = 0):
        self.tokenizer = tokenizer
        self.source = source
        self._ids: list[np.ndarray] = []
        self._starts: list[int] = []
        self._length = 0
        self._cycle: list[list[int]] | None = None
        self._cycle_pos = 0
        if source == "prose":
            self._sentences = prose_sentences(seed=seed)
        elif source == "noise":
            self._cycle = _encode_batch(tokenizer, [" " + s for s in split_sentences(NOISE_PARAGRAPH)])
        else:
            sentences = split_sentences(_read_text_source(Path(source)))
            self._cycle = _encode_batch(tokenizer, [" " + s for s in sentences])
        self._flat: np.ndarray | None = None
        self._flat_starts: np.ndarray | None = None

    def ensure(self, n_tokens: int) -> None:
        """Grow the stream to at least n_tokens (plus the rest of its last sentence)."""
        while self._length < n_tokens:
            if self._cycle is not None:
                batch = []
                for _ in range(_BATCH):
                    batch.append(self._cycle[self._cycle_pos])
                    self._cycle_pos = (self._cycle_pos + 1) % len(self._cycle)
            else:
                batch = _encode_batch(self.tokenizer, [" " + s for s in islice(self._sentences, _BATCH)])
            for ids in batch:
                if not ids:
                    continue
                self._starts.append(self._length)
                self._ids.append(np.asarray(ids, dtype=np.int32))
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
        """Token index of every sentence start, plus the stream's end."""
        self.ids
        return self._flat_starts


@dataclass(frozen=True)
class Prompt:
    """One token-exact prompt and where its needle sits."""

    ids: np.ndarray
    needle_index: int      # token index of the needle's first token in the whole prompt
    needle_tokens: int
    needle_depth: float    # real depth of the needle within the haystack body, 0..1
    body_tokens: int       # haystack tokens (needle excluded)
    head_tokens: int
    value: str


class PromptBuilder:
    """Builds prompts of exact token counts for one tokenizer and one set of texts."""

    def __init__(self, tokenizer, *, source: str = "prose", seed: int = 0,
                 needle: str = DEFAULT_NEEDLE, question: str = DEFAULT_QUESTION,
                 answer_prefix: str = DEFAULT_ANSWER_PREFIX, intro: str = DEFAULT_INTRO):
        if "{value}" not in needle:
            raise NiahError("the needle template has no {value} placeholder: write it like "
                            "'The secret passkey is {value}.'")
        self.tokenizer = tokenizer
        self.needle = needle
        self.haystack = Haystack(tokenizer, source=source, seed=seed)
        head_text, tail_text = self._render_template(intro=intro, question=question)
        self.head = np.asarray(self._encode(head_text), dtype=np.int32)
        if (not getattr(tokenizer, "chat_template", None) and tokenizer.bos_token_id is not None
                and getattr(tokenizer, "add_bos_token", False)):  # plain prompt: BOS first
            self.head = np.concatenate([[tokenizer.bos_token_id], self.head]).astype(np.int32)
        self.tail = np.asarray(self._encode(tail_text + answer_prefix), dtype=np.int32)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _render_template(self, *, intro: str, question: str) -> tuple[str, str]:
        content = f"{intro}\n\n{MARKER}\n\n{question}"
        messages = [{"role": "user", "content": content}]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                      tokenize=False)
        else:  # base models without a template: the plain text
            text = content + "\n\n"
        head, tail = text.split(MARKER)
        return head, tail

    def needle_ids(self, value: str) -> np.ndarray:
        return np.asarray(self._encode(" " + self.needle.format(value=value)), dtype=np.int32)

    def minimum_context(self, value: str = "0000000") -> int:
        return len(self.head) + len(self.tail) + len(self.needle_ids(value)) + 1

    def build(self, *, context: int, depth: float, value: str) -> Prompt:
        """A prompt of exactly `context` tokens with the needle nearest `depth`."""
        if not 0.0 <= depth <= 1.0:
            raise NiahError(f"depth {depth:g} is outside [0, 1]: use fractions like 0.1 or 0:1:0.1")
        needle = self.needle_ids(value)
        body = context - len(self.head) - len(self.tail) - len(needle)
        if body < 1:
            raise NiahError(
                f"context {context} is too short for the template, needle and question "
                f"({context - body + 1} tokens at least): use a longer --context"
            )
        self.haystack.ensure(body)
        stream, starts = self.haystack.ids, self.haystack.starts
        # Sentence boundaries inside the body: starts <= body (body itself when a sentence ends there).
        boundaries = starts[: np.searchsorted(starts, body, side="right")]
        target = depth * body
        i = int(np.argmin(np.abs(boundaries - target)))
        pos = int(boundaries[i])
        ids = np.concatenate([self.head, stream[:pos], needle, stream[pos:body], self.tail])
        assert ids.shape[0] == context
        return Prompt(ids=ids, needle_index=len(self.head) + pos, needle_tokens=len(needle),
                      needle_depth=pos / body, body_tokens=body, head_tokens=len(self.head),
                      value=value)
