"""Pure scoring functions: PASS / FAIL / NULL from a model's answer and the needle value(s).

The rule (also in the README), applied by `judge`:

1. Unicode is normalised (NFKC, so full-width digits are digits; any decimal digit is read as
   its ASCII digit) and compared case-insensitively.
2. Thinking is set aside: complete ``<think>...</think>`` blocks are removed. A stray
   ``</think>`` splits what is left into reasoning (before it) and answer (after it); the answer
   part is scored when it offers a value of the needle's kind, else the whole text (tags
   removed) is scored, so "1234567 </think> done" keeps its answer. A ``<think>`` never closed
   is reasoning cut off by the answer budget: the text after it is never scored, only the text
   before it (nothing there: NULL), so a value quoted in unfinished reasoning does not pass.
3. Values are found as whole tokens of their kind, never as substrings: a number is a run of
   digits with no digit before or after (groups of three separated by one space or comma still
   count: "1,234,567" and "1 234 567" read as 1234567; a decimal like "1234567.5" is another
   number, a full stop with no digit after it ends a sentence); a UUID is 8-4-4-4-12 hex digits with no
   hex digit or hyphen around it; a word pair is an adjective and animal of the value
   vocabulary standing as whole words. Other values match as whole words.
4. Candidates of the needle's kind that are not expected values are wrong answers: a hedge
   ("7654321 or maybe 1234567") fails. For numbers, a candidate is any whole number with at
   least as many digits as the expected value has minus two (shorter numbers, like a count,
   are not offered values).
5. NULL when nothing but whitespace is left after removing the thinking; an answer of
   punctuation only, or of anything else without the value, is FAIL.

With several expected values (multi-needle tasks) the score is the number of expected values
found over the larger of the number expected and the number of distinct values offered, so
missing values and extra (wrong or distractor) values both lower it; PASS only at 1.

Tasks name their scoring rule (niah/datasets/tasks.jsonl, ``scoring``); SCORING_RULES maps the
name to a function scoring one answer against every needle of a trial. VERDICTS is the one list
of verdicts a record can hold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .values import VALUE_ADJECTIVES, VALUE_ANIMALS, is_word_pair

PASS, FAIL, NULL, SKIP, ERROR = "PASS", "FAIL", "NULL", "SKIP", "ERROR"
VERDICTS = (PASS, FAIL, NULL, SKIP, ERROR)

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_DIGIT = re.compile(r"\d")
_NUMBER = re.compile(r"(?<!\d)(?:\d{1,3}(?:[ ,]\d{3})+|\d+)(?:\.\d+)?(?!\d)")  # decimals whole
_UUID = re.compile(r"(?<![0-9a-f-])[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}(?![0-9a-f-])")
_UUID_VALUE = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Judgement:
    """The outcome for one answer: verdict, score in [0, 1] and which expected values were found."""

    verdict: str
    score: float
    found: tuple[bool, ...]
    offered: tuple[str, ...]     # distinct values of the needle's kind in the scored answer


def normalise(text: str) -> str:
    """NFKC, every decimal digit as ASCII, lower case."""
    text = unicodedata.normalize("NFKC", text)
    return _DIGIT.sub(lambda m: str(unicodedata.decimal(m.group(), 0)), text).lower()


def value_kind(value: str) -> str:
    """The kind of a needle value: number, uuid or words (anything else: text)."""
    v = normalise(value).strip()
    if v.isascii() and v.isdigit():
        return "number"
    if _UUID_VALUE.match(v):
        return "uuid"
    return "words" if is_word_pair(v) else "text"


_WORDS = re.compile(rf"(?<![a-z])(?:{'|'.join(VALUE_ADJECTIVES)})\s+(?:{'|'.join(VALUE_ANIMALS)})(?![a-z])")


def candidates(text: str, *, kind: str, expected: tuple[str, ...] = ()) -> list[str]:
    """Values of `kind` in normalised text, in order, as their canonical strings."""
    if kind == "number":
        shortest = min((len(e) for e in expected), default=1)
        found = [re.sub(r"[ ,]", "", m.group()) for m in _NUMBER.finditer(text)]
        return [n for n in found if len(n) >= max(1, shortest - 2) or n in expected]
    if kind == "uuid":
        return _UUID.findall(text)
    if kind == "words":
        return [" ".join(m.group().split()) for m in _WORDS.finditer(text)]
    return [e for e in expected
            if re.search(rf"(?<!\w){re.escape(e)}(?!\w)", text)]


def answer_text(response: str, *, kind: str, expected: tuple[str, ...] = ()) -> str:
    """The part of a normalised response that is scored (thinking set aside, see module doc)."""
    text = _THINK_BLOCK.sub(" ", normalise(response))
    if _THINK_CLOSE in text:
        answer = text[text.rindex(_THINK_CLOSE) + len(_THINK_CLOSE):]
    elif _THINK_OPEN in text:  # reasoning never closed: only what came before it is an answer
        return text[:text.index(_THINK_OPEN)]
    else:
        return text
    if candidates(answer, kind=kind, expected=expected):
        return answer
    return text.replace(_THINK_OPEN, " ").replace(_THINK_CLOSE, " ")


def judge(response: str, expected, *, kind: str | None = None) -> Judgement:
    """Score one answer against one value (str) or several (a sequence of str)."""
    values = (expected,) if isinstance(expected, str) else tuple(expected)
    values = tuple(" ".join(normalise(v).split()) for v in values)
    kind = kind or value_kind(values[0])
    text = answer_text(response or "", kind=kind, expected=values)
    if not text.strip():
        return Judgement(NULL, 0.0, tuple(False for _ in values), ())
    offered = tuple(dict.fromkeys(candidates(text, kind=kind, expected=values)))
    found = tuple(v in offered for v in values)
    hits = sum(found)
    if len(values) == 1:
        ok = hits == 1 and len(offered) == 1
        return Judgement(PASS if ok else FAIL, 1.0 if ok else 0.0, found, offered)
    score = hits / max(len(values), len(offered))
    return Judgement(PASS if score == 1.0 else FAIL, score, found, offered)


def score(response: str, value: str, *, kind: str | None = None) -> str:
    """The verdict for one answer to a single-value needle."""
    return judge(response, value, kind=kind).verdict


@dataclass(frozen=True)
class TaskScore:
    """One answer scored against every needle of a trial."""

    verdict: str
    score: float
    found: tuple[bool, ...]      # per needle, in order: a target retrieved / another's value offered


def score_values(response: str, *, values: Sequence[str], targets: Sequence[bool],
                 kind: str) -> TaskScore:
    """Rule ``values``: the targets' values scored together by `judge`; a needle that is not a
    target (a distractor) counts as found when the answer offers its value, a wrong answer."""
    j = judge(response, [v for v, t in zip(values, targets) if t], kind=kind)
    hits = iter(j.found)
    found = tuple(bool(next(hits)) if t else v in j.offered for v, t in zip(values, targets))
    return TaskScore(j.verdict, j.score, found)


# name (a task row's "scoring") -> rule(response, *, values, targets, kind) -> TaskScore
SCORING_RULES: dict[str, Callable[..., TaskScore]] = {"values": score_values}
