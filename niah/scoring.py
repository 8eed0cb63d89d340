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

Rule ``name`` (--task non-literal, `score_name`) scores a character name instead of a value:
the name as a whole word, and no other name of niah/datasets/names.txt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .datasets import character_names
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
    offered: tuple[str, ...]  # distinct values of the needle's kind in the scored answer


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


_WORDS = re.compile(
    rf"(?<![a-z])(?:{'|'.join(VALUE_ADJECTIVES)})\s+(?:{'|'.join(VALUE_ANIMALS)})(?![a-z])"
)


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
    return [e for e in expected if re.search(rf"(?<!\w){re.escape(e)}(?!\w)", text)]


def answer_text(response: str, *, kind: str, expected: tuple[str, ...] = ()) -> str:
    """The part of a normalised response that is scored (thinking set aside, see module doc)."""
    text = _THINK_BLOCK.sub(" ", normalise(response))
    if _THINK_CLOSE in text:
        answer = text[text.rindex(_THINK_CLOSE) + len(_THINK_CLOSE) :]
    elif _THINK_OPEN in text:  # reasoning never closed: only what came before it is an answer
        return text[: text.index(_THINK_OPEN)]
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
    found: tuple[bool, ...]  # per needle, in order: a target retrieved / another's value offered


def score_values(
    response: str, *, values: Sequence[str], targets: Sequence[bool], kind: str, **_
) -> TaskScore:
    """Rule ``values``: the targets' values scored together by `judge`; a needle that is not a
    target (a distractor) counts as found when the answer offers its value, a wrong answer."""
    j = judge(response, [v for v, t in zip(values, targets) if t], kind=kind)
    hits = iter(j.found)
    found = tuple(bool(next(hits)) if t else v in j.offered for v, t in zip(values, targets))
    return TaskScore(j.verdict, j.score, found)


_WORD = re.compile(r"[a-z]+")
_NAME = re.compile(r"(?<![A-Za-z])[A-Z]{5}(?![A-Za-z])")


def _listed(
    response: str, *, expected: Sequence[str], known: set[str]
) -> tuple[str, tuple[str, ...]]:
    """(scored text, distinct known words it names in order), thinking set aside as `judge`."""
    text = answer_text(response or "", kind="text", expected=tuple(expected))
    return text, tuple(dict.fromkeys(w for w in _WORD.findall(text) if w in known))


def _fraction(expected: Sequence[str], offered: tuple[str, ...], text: str) -> tuple[str, float]:
    if not text.strip():
        return NULL, 0.0
    hits = sum(e in offered for e in expected)
    score = hits / max(len(expected), len(offered))
    return (PASS if score == 1.0 else FAIL), score


def score_names(
    response: str,
    *,
    values: Sequence[str],
    targets: Sequence[bool],
    kind: str,
    keys: Sequence[str | None] = (),
    **_,
) -> TaskScore:
    """Rule ``names`` (variable tracking): the target chain's variable names (`keys` of the
    target needles) found as whole words, over the larger of their number and the distinct
    names offered: a distractor chain's name, or a made-up name of the same form (five
    capitals) that the scored answer gives (thinking set aside), counts wrong."""
    names = [k.lower() for k in keys]
    expected = list(dict.fromkeys(k for k, t in zip(names, targets) if t))
    text, offered = _listed(response, expected=expected, known=set(names))
    raw = _THINK_BLOCK.sub(" ", unicodedata.normalize("NFKC", response or ""))
    scored = set(_WORD.findall(text))  # a made-up name counts where the scored answer says it
    made_up = tuple(m.lower() for m in _NAME.findall(raw) if m.lower() in scored)
    offered = tuple(dict.fromkeys(offered + made_up))
    verdict, score = _fraction(expected, offered, text)
    return TaskScore(verdict, score, tuple(k in offered for k in names))


def score_words(
    response: str,
    *,
    values: Sequence[str],
    targets: Sequence[bool],
    kind: str,
    vocabulary: frozenset[str] = frozenset(),
    **_,
) -> TaskScore:
    """Rule ``words`` (word-list tasks): the targets' words found as whole words, over the
    larger of their number and the distinct list words offered (any word of `vocabulary`, the
    words the list can hold): a missing word and an extra word both lower the score."""
    expected = [v.lower() for v, t in zip(values, targets) if t]
    text, offered = _listed(response, expected=expected, known=set(vocabulary) | set(expected))
    verdict, score = _fraction(expected, offered, text)
    return TaskScore(verdict, score, tuple(v.lower() in offered for v in values))


# name (a task row's "scoring") -> rule(response, *, values, targets, kind, keys, vocabulary)
# -> TaskScore (a rule takes the keyword arguments it reads and ignores the others)
SCORING_RULES: dict[str, Callable[..., TaskScore]] = {
    "values": score_values,
    "names": score_names,
    "words": score_words,
}


def score_name(
    response: str,
    *,
    values: Sequence[str],
    targets: Sequence[bool],
    kind: str,
    names: Sequence[str] | None = None,
    **_,
) -> TaskScore:
    """Rule ``name`` (--task non-literal): PASS when the answer holds the expected character
    name as a whole word and no other name of the character list (names.txt; a hedge such as
    "Mira or Tobias" fails); a partial name fails. Thinking is set aside as for values; NULL
    for an empty answer. `kind` is not used (the value is a name)."""
    expected = " ".join(normalise(values[0]).split())
    others = [normalise(n) for n in (character_names() if names is None else names)]
    text = answer_text(response or "", kind="text", expected=(expected,))
    if not text.strip():
        return TaskScore(NULL, 0.0, (False,) * len(values))
    offered = {n for n in [expected, *others] if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text)}
    ok = offered == {expected}
    return TaskScore(
        PASS if ok else FAIL,
        1.0 if ok else 0.0,
        (expected in offered,) + (False,) * (len(values) - 1),
    )


SCORING_RULES["name"] = score_name
