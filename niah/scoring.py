"""Pure scoring functions: PASS / FAIL / NULL from a model's answer and the needle value.

The answer is normalised before comparison: thinking blocks (<think>...</think>, and an
unterminated <think> to the end) are removed, then case, whitespace and punctuation are
dropped from both the answer and the value. PASS when the value appears in the answer, NULL
when nothing is left of the answer, FAIL otherwise.
"""

from __future__ import annotations

import re

PASS, FAIL, NULL, SKIP, ERROR = "PASS", "FAIL", "NULL", "SKIP", "ERROR"
VERDICTS = (PASS, FAIL, NULL, SKIP, ERROR)

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.DOTALL | re.IGNORECASE)
_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def strip_thinking(text: str) -> str:
    """Remove reasoning blocks, including one left open by a truncated answer."""
    text = _THINK_BLOCK.sub(" ", text)
    text = re.sub(r"^.*?</think>", " ", text, flags=re.DOTALL | re.IGNORECASE)
    return _THINK_OPEN.sub(" ", text)


def normalise(text: str) -> str:
    """Lower case with whitespace and punctuation removed."""
    return _NON_ALNUM.sub("", text.lower())


def score(response: str, value: str) -> str:
    """The verdict for one answer."""
    answer = normalise(strip_thinking(response))
    if not answer:
        return NULL
    return PASS if normalise(value) in answer else FAIL
