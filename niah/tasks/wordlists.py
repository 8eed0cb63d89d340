"""Word-list tasks, where the haystack IS a list of words and the answer is an aggregate over it:
``common-words`` (RULER's CWE: a numbered list where a few words recur often and the rest
rarely; name the N most common) and ``frequent-words`` (RULER's FWE: coded words drawn with
Zipf-like frequencies; name the three most frequent). docs/method.md (Tasks) states both.

A trial holds a WordList (the knobs and a seed string); the list itself is made when the prompt
is built, for the exact body length: the planned words (their counts fixed by the knobs and the
length), then fresh filler words used once each, of token lengths chosen so the body is exactly
the tokens asked, all shuffled together. Each entry is its number (``\\n12.``) and its word
(`` word``) encoded apart, so an entry's tokens never depend on its neighbours. Fillers occur
once, so they never change which words are most frequent; the plan checks that the answer is
strictly ahead of every other word (no ties).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..errors import NiahError
from ..haystack import _encode_batch
from .spec import TaskSpec

COMMON, FREQUENT = "common", "frequent"
DEFAULT_TOP = {COMMON: 10, FREQUENT: 3}
DEFAULT_COMMON_REPEATS = 30  # RULER's freq_cw
DEFAULT_RARE_REPEATS = 3  # RULER's freq_ucw
DEFAULT_ALPHA = 2.0  # RULER's FWE alpha
RARE_POOL = 12000  # distinct rare words a common-words list can use
CODED_POOL = 2000  # ranked coded words a frequent-words list can use
FILLERS = 600
RESERVE = 40  # tokens left for fillers after the plan
MIN_ENTRY_TOKENS = {COMMON: 2, FREQUENT: 1}  # fewest tokens of one entry (number, word)
_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fl gr pl st tr sh ch".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "m", "t"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Common English words (and the questions' own words) a list never holds, so an answer's
# phrasing ("I think it is ..., as we see") is never read as naming a list word: random coded
# words of one or two letters, and one-syllable pseudo-words, would otherwise hit "a", "i",
# "as", "no", "we", ...
ENGLISH = frozenset(
    """a i o am an as at be by do go he if in is it me my no of oh ok on or so to up us we ye
    all and any are but can did for got had has her him his how its let may not now one our
    out see she the too two was way who why yes yet you also been both come does done each
    from have here just like list made make many more most much must name only over said
    same some sure such take than that them then they this very want well were what when
    with word your about above after again being could every first found these think those
    three times where which while would answer coded common count words counted frequent
    appear appears number numbered other close comes""".split()
)


def _pseudo_word(rng: random.Random, syllables: int) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    )


def _coded_word(rng: random.Random, letters: int) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(letters))


def _distinct(make, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        w = make()
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@dataclass(frozen=True)
class WordList:
    """One trial's word list: which rule, its knobs and the seed string of its words."""

    rule: str  # COMMON or FREQUENT
    seed_key: str
    top: int  # words the answer names
    common_repeats: int = DEFAULT_COMMON_REPEATS
    rare_repeats: int = DEFAULT_RARE_REPEATS
    alpha: float = DEFAULT_ALPHA

    @property
    def numbered(self) -> bool:
        return self.rule == COMMON

    def words(self) -> tuple[list[str], list[str]]:
        """(ranked words, fillers): the answer is the first `top` ranked words."""
        rng = random.Random(f"niah-words-{self.rule}-{self.seed_key}")
        taken = set(ENGLISH)
        if self.rule == COMMON:
            ranked = _distinct(
                lambda: _pseudo_word(rng, rng.choice((2, 2, 3))), self.top + RARE_POOL, taken
            )
            fillers = _distinct(lambda: _pseudo_word(rng, rng.randint(1, 8)), FILLERS, taken)
        else:
            ranked = _distinct(lambda: _coded_word(rng, rng.randint(3, 7)), CODED_POOL, taken)
            fillers = _distinct(lambda: _coded_word(rng, rng.randint(1, 16)), FILLERS, taken)
        return ranked, fillers

    def answer(self) -> tuple[str, ...]:
        return tuple(self.words()[0][: self.top])

    def vocabulary(self) -> frozenset[str]:
        """Every word a list of this trial can hold (an answer naming another is wrong)."""
        ranked, fillers = self.words()
        return frozenset(ranked + fillers)

    def body(self, tokenizer, *, budget: int) -> tuple[np.ndarray, dict[str, int]]:
        """Exactly `budget` tokens of list, and each answer word's first token index in it."""
        ranked, fillers = self.words()
        costs = _Costs(tokenizer, numbered=self.numbered)
        plan = self._plan(ranked, costs, budget=budget)
        entries = [w for w, c in plan for _ in range(c)]
        rem = budget - costs.entries(entries)
        entries += _fill(fillers, costs, start=len(entries) + 1, rem=rem)
        random.Random(f"niah-order-{self.seed_key}").shuffle(entries)
        parts, firsts, at = [], {}, 0
        for i, word in enumerate(entries, 1):
            num, ids = costs.number_ids(i), costs.word_ids(word)
            firsts.setdefault(word, at + len(num))
            parts += [num, ids]
            at += len(num) + len(ids)
        body = np.concatenate(parts).astype(np.int32)
        if len(body) != budget:  # the fill guarantees it
            raise NiahError(f"word list of {len(body)} tokens for {budget}: report this as a bug")
        return body, {w: firsts[w] for w in ranked[: self.top]}

    def _plan(self, ranked, costs, *, budget: int) -> list[tuple[str, int]]:
        """(word, count) of the planned words, leaving RESERVE tokens or more for fillers."""
        if self.rule == COMMON:
            plan = [(w, self.common_repeats) for w in ranked[: self.top]]
            if costs.plan(plan) + RESERVE > budget:
                raise NiahError(
                    f"{budget} tokens cannot hold {self.top} common words x "
                    f"{self.common_repeats} ({costs.plan(plan) + RESERVE} tokens at "
                    "least): use a longer --context or fewer --needles"
                )
            spent, entries = costs.plan(plan), self.top * self.common_repeats
            for w in ranked[self.top :]:
                more = costs.added(entries, w, self.rare_repeats)
                if spent + more + RESERVE > budget:
                    return plan
                plan.append((w, self.rare_repeats))
                spent, entries = spent + more, entries + self.rare_repeats
            raise NiahError(
                f"{budget} tokens need more than {RARE_POOL} rare words: use a shorter --context"
            )
        return self._zipf_plan(ranked, costs, budget=budget)

    def _zipf_plan(self, ranked, costs, *, budget: int) -> list[tuple[str, int]]:
        """The largest Zipf plan (count of rank k proportional to k**-alpha) that fits."""

        def plan_of(m: int):
            weights = [k**-self.alpha for k in range(1, len(ranked) + 1)]
            total = sum(weights)
            return [(w, int(m * x / total)) for w, x in zip(ranked, weights) if int(m * x / total)]

        lo, hi = 0, budget
        while lo < hi:  # the largest m whose plan fits
            mid = (lo + hi + 1) // 2
            if costs.plan(plan_of(mid)) + RESERVE <= budget:
                lo = mid
            else:
                hi = mid - 1
        plan = plan_of(lo)
        counts = [c for _, c in plan] + [0] * (self.top + 1)
        if not all(counts[i] > counts[i + 1] for i in range(self.top)) or counts[self.top - 1] < 2:
            raise NiahError(
                f"{budget} tokens are too few for {self.top} clearly most frequent "
                "words: use a longer --context"
            )
        return plan

    def minimum_body(self, tokenizer) -> int:
        """The fewest body tokens this list can be made in (doubling, then bisection)."""

        def fits(n: int) -> bool:
            try:
                self.body(tokenizer, budget=n)
                return True
            except NiahError:
                return False

        hi = RESERVE
        while not fits(hi):
            if hi > 1 << 22:
                raise NiahError("no context holds this word list: report this as a bug")
            hi *= 2
        lo = hi // 2  # does not fit (or is RESERVE / 2)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return hi


class _Costs:
    """Token ids of entry numbers and words, encoded in batches and kept."""

    def __init__(self, tokenizer, *, numbered: bool):
        self.tokenizer, self.numbered = tokenizer, numbered
        self._words: dict[str, np.ndarray] = {}
        self._numbers: list[np.ndarray] = []

    def word_ids(self, word: str) -> np.ndarray:
        if word not in self._words:
            self.words([word])
        return self._words[word]

    def words(self, words) -> None:
        new = [w for w in dict.fromkeys(words) if w not in self._words]
        for w, ids in zip(new, _encode_batch(self.tokenizer, [" " + w for w in new])):
            self._words[w] = np.asarray(ids, dtype=np.int32)

    def number_ids(self, i: int) -> np.ndarray:
        """Tokens before the i-th word (1-based): ``\\ni.`` (``i.`` first), none when unnumbered."""
        if not self.numbered:
            return np.zeros(0, np.int32)
        while len(self._numbers) < i:
            start = len(self._numbers) + 1
            texts = [f"{'' if k == 1 else chr(10)}{k}." for k in range(start, start + 4096)]
            self._numbers += [np.asarray(x, np.int32) for x in _encode_batch(self.tokenizer, texts)]
        return self._numbers[i - 1]

    def entries(self, words: list[str]) -> int:
        self.words(words)
        return sum(len(self.number_ids(i)) + len(self._words[w]) for i, w in enumerate(words, 1))

    def plan(self, plan: list[tuple[str, int]]) -> int:
        self.words([w for w, _ in plan])
        n = sum(c for _, c in plan)
        return sum(len(self._words[w]) * c for w, c in plan) + self.numbers(1, n)

    def numbers(self, first: int, last: int) -> int:
        return sum(len(self.number_ids(i)) for i in range(first, last + 1))

    def added(self, entries: int, word: str, count: int) -> int:
        """Tokens that `count` more entries of `word` add after `entries` entries."""
        return len(self.word_ids(word)) * count + self.numbers(entries + 1, entries + count)


def _fill(fillers: list[str], costs: _Costs, *, start: int, rem: int) -> list[str]:
    """Filler words (each once) whose entries take exactly `rem` tokens, numbered from `start`."""
    costs.words(fillers)
    by_cost: dict[int, list[str]] = {}
    for w in fillers:
        by_cost.setdefault(len(costs.word_ids(w)), []).append(w)
    out, i = [], start
    while rem > 0:
        num = len(costs.number_ids(i))
        if by_cost.get(rem - num):
            out.append(by_cost[rem - num].pop())
            return out
        after = len(costs.number_ids(i + 1)) + min(by_cost)
        fits = [c for c, ws in by_cost.items() if ws and rem - num - c >= after]
        if not fits:
            raise NiahError(
                f"no filler words fill the last {rem} tokens of the list: report this as a bug"
            )
        c = max(fits)
        out.append(by_cost[c].pop())
        rem -= num + c
        i += 1
    return out


def word_list(spec: TaskSpec, *, rule: str, top: int, seed: int, value_key: str) -> WordList:
    return WordList(
        rule=rule,
        seed_key=f"{seed}-{value_key}",
        top=top,
        common_repeats=int(spec.param("common_repeats", DEFAULT_COMMON_REPEATS)),
        rare_repeats=int(spec.param("rare_repeats", DEFAULT_RARE_REPEATS)),
        alpha=float(spec.param("alpha", DEFAULT_ALPHA)),
    )


def word_needles(
    spec: TaskSpec,
    *,
    n: int,
    seed: int,
    value_key: str,
    kind: str,
    keys: tuple[str, ...],
    reject=None,
):
    """Generators ``common-words`` / ``frequent-words``: the answer's words as target needles
    (no haystack needle: the list is the haystack), the question's {top}, and the WordList."""
    rule = COMMON if spec.generator == "common-words" else FREQUENT
    top = n if spec.variable else DEFAULT_TOP[rule]
    words = word_list(spec, rule=rule, top=top, seed=seed, value_key=value_key)
    answer = words.answer()
    return [(None, w, True) for w in answer], {"top": str(top)}, {"answers": answer, "words": words}


def words_budget(spec: TaskSpec, *, n: int, value_kind: str) -> int:
    """Budget ``per-word``: room for each word asked (pseudo-words run to a few tokens)."""
    top = n if spec.variable else DEFAULT_TOP[FREQUENT]
    return max(32, 16 + 8 * top)


def _zipf_separates(*, alpha: float, top: int, entries: int) -> bool:
    """Whether some plan of at most `entries` entries (counts as `WordList._zipf_plan` makes
    them) puts `top` words strictly ahead of the rest, the last of them twice or more."""
    weights = [k**-alpha for k in range(1, CODED_POOL + 1)]
    total, head = sum(weights), np.asarray(weights[: top + 1])[None, :]
    for start in range(1, max(entries, 1) + 1, 1 << 18):
        m = np.arange(start, min(start + (1 << 18), max(entries, 1) + 1), dtype=np.float64)
        counts = (m[:, None] * head / total).astype(np.int64)
        ok = counts[:, top - 1] >= 2
        for i in range(top):
            ok &= counts[:, i] > counts[:, i + 1]
        if ok.any():
            return True
    return False


def check_words(spec: TaskSpec, *, n: int, shortest: int) -> None:
    """Param checks ``common-words`` / ``frequent-words``, before the tokenizer: the common
    words recur more than the rare ones and their entries (MIN_ENTRY_TOKENS each, plus RESERVE)
    fit the shortest context; the Zipf counts can single out the top words in it."""
    rule = COMMON if spec.generator == "common-words" else FREQUENT
    top = n if spec.variable else DEFAULT_TOP[rule]
    words = word_list(spec, rule=rule, top=top, seed=0, value_key="check")
    if rule == COMMON:
        if words.common_repeats <= words.rare_repeats:
            raise NiahError(
                f"--task {spec.task}: common_repeats {words.common_repeats} must be "
                f"above rare_repeats {words.rare_repeats}, or no words are the most "
                "common: raise common_repeats or lower rare_repeats"
            )
        need = top * words.common_repeats * MIN_ENTRY_TOKENS[COMMON] + RESERVE
        if need > shortest:
            raise NiahError(
                f"--task {spec.task}: {top} common words x {words.common_repeats} "
                f"need {need} tokens at least, more than the shortest --context "
                f"{shortest} holds: use fewer --needles, a smaller common_repeats or a "
                "longer --context"
            )
    elif not _zipf_separates(alpha=words.alpha, top=top, entries=shortest - RESERVE):
        raise NiahError(
            f"--task {spec.task}: alpha {words.alpha:g} cannot make {top} words "
            f"clearly most frequent within the shortest --context {shortest}: use an "
            f"alpha nearer {DEFAULT_ALPHA:g} or a longer --context"
        )
