"""One trial of a task: the needles it hides (key, value, depth, target or distractor), its
question and answer prefix with their placeholders filled, and the scoring rule it uses."""

from __future__ import annotations

from dataclasses import dataclass

from ..haystack import fill


@dataclass(frozen=True)
class Needle:
    key: str | None
    value: str
    depth: float  # requested depth of this needle
    target: bool  # False for a distractor (its value in the answer is a wrong answer)


@dataclass(frozen=True)
class TaskTrial:
    """Everything one trial hides and asks."""

    task: str
    needles: tuple[Needle, ...]
    needle_template: str
    question: str
    answer_prefix: str
    scoring: str = "values"  # a name in niah.scoring.SCORING_RULES
    answers: tuple[str, ...] | None = None  # what a right answer lists, when not the targets'
    # values (variable tracking: the chain's names; word tasks: the most frequent words)
    words: object | None = None  # a word-list task's list (niah.tasks.wordlists.WordList)

    @property
    def expected(self) -> tuple[str, ...]:
        if self.answers is not None:
            return self.answers
        return tuple(n.value for n in self.needles if n.target)

    def needle_text(self, needle: Needle) -> str:
        return fill(self.needle_template, needle.value, key=needle.key)


def join_keys(keys: list[str]) -> str:
    """Keys as a question names them: "a", "a and b", "a, b and c"."""
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


def fill_fields(text: str, fields: dict[str, str]) -> str:
    """Question or answer-prefix text with each {name} of `fields` replaced (other text,
    braces included, as written: unknown placeholders are refused when the task is set)."""
    for name, value in fields.items():
        text = text.replace("{" + name + "}", value)
    return text
