"""RULER's other task families (issue 21): variable tracking, common-words, frequent-words.

Generators are deterministic from the seed; answer keys are checked by an independent
computation (walking the chains in the prompt text, counting the list's words with Counter);
scoring passes a right answer and fails a partial, hedged or distractor-naming one; the CLI
runs each task on the real SmolLM2 at a small context.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from conftest import invoke, read_records

from niah import tasks
from niah.haystack import PromptBuilder

RULER = ["variable-tracking", "common-words", "frequent-words"]
CONTEXT = {"variable-tracking": 1024, "common-words": 3072, "frequent-words": 1024}


@pytest.fixture(scope="module")
def builder(gguf_tokenizer):
    return PromptBuilder(gguf_tokenizer)


def _trial(builder, task, *, seed=0, key="c-d0.5-s0", context=None):
    spec = tasks.get_spec(task)
    return tasks.build_trial(
        spec,
        needles=spec.default_needles,
        depth=0.5,
        seed=seed,
        value_key=key,
        kind="number",
        reject=lambda v: builder.value_occurs(v, context=context or 4096),
    )


def _body_text(builder, prompt):
    end = prompt.head_tokens + prompt.body_tokens + sum(p.tokens for p in prompt.placements)
    return builder.tokenizer.decode(prompt.ids[prompt.head_tokens : end].tolist())


def _score(trial, prompt, response):
    return tasks.score_trial(trial, prompt, response, kind="number")


@pytest.mark.parametrize("task", RULER)
def test_deterministic_from_the_seed_and_token_exact(builder, task):
    ctx = CONTEXT[task]
    a, b = (tasks.build_prompt(builder, _trial(builder, task), context=ctx) for _ in range(2))
    assert len(a.ids) == ctx and (a.ids == b.ids).all()
    other = tasks.build_prompt(builder, _trial(builder, task, seed=1), context=ctx)
    assert not (other.ids == a.ids).all()
    for longer in (ctx + 1, ctx + 7, 2 * ctx + 3):
        assert len(tasks.build_prompt(builder, _trial(builder, task), context=longer).ids) == longer


def test_variable_tracking_answer_walks_the_chains(builder):
    trial = _trial(builder, "variable-tracking")
    prompt = tasks.build_prompt(builder, trial, context=1024)
    text = _body_text(builder, prompt)
    links = re.findall(r"VAR ([A-Z]{5}) = (\S+)", text)
    assert len(links) == 4 * 5  # 4 chains, 4 hops: 5 links each
    value = re.search(r"assigned the value (\S+)", trial.question).group(1)
    holds = dict(links)
    found, changed = {value}, True  # walk: every name holding a found thing
    while changed:
        new = {name for name, what in links if what in found}
        changed = not new <= found
        found |= new
    assert set(trial.expected) == found - {value} and len(trial.expected) == 5
    for name in trial.expected[1:]:  # each link after the one it names
        assert text.index(f"VAR {name} ") > text.index(f"VAR {holds[name]} ")
    for n, p in zip(trial.needles, prompt.placements):  # the depth rule holds for every link
        assert abs(p.depth - n.depth) <= 0.01


def test_variable_tracking_scoring(builder):
    trial = _trial(builder, "variable-tracking")
    prompt = tasks.build_prompt(builder, trial, context=1024)
    names = list(trial.expected)
    distractor = next(n.key for n in trial.needles if not n.target)
    assert _score(trial, prompt, ", ".join(names))["verdict"] == "PASS"
    assert _score(trial, prompt, " ".join(reversed(names)) + ".")["verdict"] == "PASS"
    partial = _score(trial, prompt, ", ".join(names[:3]))
    assert partial["verdict"] == "FAIL" and partial["score"] == pytest.approx(0.6)
    hedged = _score(trial, prompt, ", ".join(names) + " or maybe " + distractor)
    assert hedged["verdict"] == "FAIL" and hedged["score"] == pytest.approx(5 / 6)
    assert any(n["found"] and n["role"] == "distractor" for n in hedged["needles"])
    invented = _score(trial, prompt, ", ".join(names) + ", QQQQQ")
    assert invented["verdict"] == "FAIL"
    assert _score(trial, prompt, "  ")["verdict"] == "NULL"
    # names weighed in reasoning that the answer sets aside (before a stray </think>, or in a
    # <think> never closed after the answer) are not offered: only the scored answer counts
    for thought in (f"QQQQQ? {distractor}? </think> ", f"{', '.join(names)} <think> QQQQQ "):
        text = thought + ", ".join(names) if "</think>" in thought else thought
        assert _score(trial, prompt, text)["verdict"] == "PASS", text


@pytest.mark.parametrize("task", ["common-words", "frequent-words"])
def test_word_lists_answer_is_the_counted_top(builder, task):
    ctx = CONTEXT[task] * 2
    trial = _trial(builder, task)
    prompt = tasks.build_prompt(builder, trial, context=ctx)
    text = _body_text(builder, prompt)
    words = re.findall(r"^\d+\. (\S+)$", text, re.M) if task == "common-words" else text.split()
    if task == "common-words":  # numbered 1..n with nothing else
        assert len(words) == len(text.strip().splitlines())
        assert [int(line.split(".")[0]) for line in text.strip().splitlines()] == list(
            range(1, len(words) + 1)
        )
    counts = Counter(words).most_common()
    top = len(trial.expected)
    assert top == (10 if task == "common-words" else 3)
    assert {w for w, _ in counts[:top]} == set(trial.expected)
    assert counts[top - 1][1] > counts[top][1]  # no tie at the cut
    if task == "frequent-words":  # strictly ordered, as the key says
        assert [w for w, _ in counts[:3]] == list(trial.expected)
        assert counts[0][1] > counts[1][1] > counts[2][1] > counts[3][1]
    else:
        assert {c for _, c in counts[:top]} == {30} and counts[top][1] <= 3


@pytest.mark.parametrize("task", ["common-words", "frequent-words"])
def test_word_scoring(builder, task):
    trial = _trial(builder, task)
    prompt = tasks.build_prompt(builder, trial, context=CONTEXT[task])
    words = list(trial.expected)
    vocab = trial.words.vocabulary()
    extra = next(w for w in sorted(vocab) if w not in words)
    assert (
        _score(trial, prompt, "\n".join(f"{i}. {w}" for i, w in enumerate(words, 1)))["verdict"]
        == "PASS"
    )
    assert _score(trial, prompt, ", ".join(words[:-1]))["verdict"] == "FAIL"
    hedged = _score(trial, prompt, ", ".join(words) + " or perhaps " + extra)
    assert hedged["verdict"] == "FAIL" and hedged["score"] == pytest.approx(
        len(words) / (len(words) + 1)
    )
    # words of the answer's phrasing are not list words: no penalty
    assert _score(trial, prompt, "They are " + " and ".join(words) + ".")["verdict"] == "PASS"


def test_bad_knobs_are_one_line(tmp_path):
    for args, message in (
        (["--task", "variable-tracking", "--needles", "0"], "--needles 0"),
        (["--task", "frequent-words", "--needles", "5"], "--needles 5"),
        (["--task", "common-words", "--needles", "65"], "--needles 65"),
    ):
        r = invoke(["run", *args, "--context", "1k", "--out", str(tmp_path)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output


def test_too_short_context_is_one_line(builder):
    from niah.errors import NiahError

    with pytest.raises(NiahError, match="cannot hold 10 common words x 30"):
        tasks.build_prompt(builder, _trial(builder, "common-words"), context=1024)


@pytest.mark.slow
@pytest.mark.parametrize("task", RULER)
def test_cli_runs_each_task(tmp_path, gguf_path, builder, task):
    out = tmp_path / "res"
    ctx = CONTEXT[task]
    r = invoke(
        ["run", "--task", task, "--context", str(ctx), "--depth", "0.5", "--out", str(out), "-q"],
        catch_exceptions=False,
    )
    assert r.exit_code in (0, 1), r.output
    folder = next(p for p in out.iterdir() if p.is_dir())
    (rec,) = read_records(folder)
    assert rec["task"] == task and rec["context_tokens"] == ctx
    spec = tasks.get_spec(task)
    assert (
        len(rec["needles"]) == spec.default_needles * (5 if task == "variable-tracking" else 1)
        or task == "frequent-words"
    )
    assert (rec["verdict"] == "PASS") == (rec["score"] == 1.0)
    assert rec["verdict"] in ("PASS", "FAIL", "NULL")


# --task-param NAME=VALUE: the row's knobs from the command line, checked before the model loads
BAD_PARAMS = (
    (
        ["--task", "variable-tracking", "--task-param", "hops=0"],
        "--task-param hops=0 is not allowed for --task variable-tracking: use a whole number of 1 "
        "or more, like hops=4",
    ),
    (
        ["--task", "variable-tracking", "--task-param", "hop=2"],
        "--task variable-tracking has no knob 'hop': use hops",
    ),
    (
        ["--task", "single", "--task-param", "hops=2"],
        "--task single has no knob 'hops': this task has no knobs: drop --task-param",
    ),
    (
        ["--task", "variable-tracking", "--task-param", "hops"],
        "bad --task-param 'hops': write NAME=VALUE, like --task-param hops=2",
    ),
    (
        ["--task", "common-words", "--task-param", "needles=5"],
        "--task-param needles sets what --needles sets: use --needles 5",
    ),
    (
        ["--task", "frequent-words", "--task-param", "alpha=-1"],
        "--task-param alpha=-1 is not allowed for --task frequent-words: use a number above 0, "
        "like alpha=2.0",
    ),
    (
        ["--task", "variable-tracking", "--task-param", "hops=100"],
        "--task variable-tracking with 4 chains of 100 hops hides 404 assignments, 1616 tokens at "
        "least, more than the shortest --context 1024 holds: use fewer hops or --needles, or a "
        "longer --context",
    ),
    (
        ["--task", "common-words", "--task-param", "common_repeats=60"],
        "--task common-words: 10 common words x 60 need 1240 tokens at least, more than the "
        "shortest --context 1024 holds: use fewer --needles, a smaller common_repeats or a longer "
        "--context",
    ),
    (
        ["--task", "common-words", "--task-param", "rare_repeats=30"],
        "--task common-words: common_repeats 30 must be above rare_repeats 30, or no words are the "
        "most common: raise common_repeats or lower rare_repeats",
    ),
    (
        ["--task", "frequent-words", "--task-param", "alpha=12"],
        "--task frequent-words: alpha 12 cannot make 3 words clearly most frequent within the "
        "shortest --context 1024: use an alpha nearer 2 or a longer --context",
    ),
)


@pytest.mark.parametrize("args,message", BAD_PARAMS, ids=[a[-1] for a, _ in BAD_PARAMS])
def test_bad_task_params_are_one_line_before_the_model_loads(tmp_path, args, message):
    r = invoke(
        [
            "run",
            *args,
            "--context",
            "1k,4k",
            "--out",
            str(tmp_path),
            "--model",
            str(tmp_path / "no-model"),
        ]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip() == f"error: {message}"


def test_task_params_reach_the_config_hash_and_the_generator(builder):
    from niah.config import RunConfig

    def config(*params):
        return RunConfig(
            model="x",
            **tasks.resolve(
                task="variable-tracking",
                needles=None,
                needle=None,
                question=None,
                answer_prefix=None,
                task_param=list(params),
                contexts=(1024,),
            ),
        )

    # the same knob spelt with spaces is the same config (a knob given twice is refused:
    # tests/test_hostile4.py)
    default, two, again = config(), config("hops=2"), config(" hops = 2 ")
    assert default.task_params == () and two.task_params == (("hops", 2),) == again.task_params
    assert "task_params" not in default.hashed_fields()  # old folders keep their hash
    assert default.hash() != two.hash() == again.hash()
    assert RunConfig.from_dict(json.loads(json.dumps(two.to_dict()))) == two
    trial = tasks.trial_for(two, depth=0.5, value_key="k")
    assert len(trial.needles) == 4 * 3 and len(trial.expected) == 3
    assert two.max_tokens <= default.max_tokens


@pytest.mark.slow
def test_cli_variable_tracking_with_two_hops(tmp_path, gguf_path):
    out = tmp_path / "res"
    r = invoke(
        [
            "run",
            "--task",
            "variable-tracking",
            "--task-param",
            "hops=2",
            "--context",
            "1024",
            "--depth",
            "0.5",
            "--out",
            str(out),
            "-q",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code in (0, 1), r.output
    folder = next(p for p in out.iterdir() if p.is_dir())
    assert json.loads((folder / "config.json").read_text())["task_params"] == [["hops", 2]]
    (rec,) = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    held = {n["key"]: n["value"] for n in rec["needles"]}
    starts = [k for k, v in held.items() if v not in held]  # links holding a value
    assert len(starts) == 4 and len(rec["needles"]) == 4 * 3
    for start in starts:  # walk each chain
        chain, name = [start], start
        while nxt := [k for k, v in held.items() if v == name]:
            (name,) = nxt
            chain.append(name)
        assert len(chain) == 3  # 2 hops after the first
    targets = {n["key"] for n in rec["needles"] if n["role"] == "target"}
    assert set(rec["value"].split(", ")) == targets and len(targets) == 3


@pytest.mark.parametrize("rule,top", [("common", 10), ("frequent", 3)])
def test_answer_phrasing_is_never_a_list_word(rule, top):
    """The generated words never equal a common English word, so an answer's own phrasing
    ("I think ... as we see") costs nothing: coded words of one or two letters ("a", "i",
    "as") and one-syllable pseudo-words ("no", "we", "so") used to fall in the vocabulary,
    failing a right answer."""
    from niah.scoring import score_words
    from niah.tasks.wordlists import WordList

    for s in range(40):
        wl = WordList(rule=rule, seed_key=f"phrasing-{s}", top=top)
        words = list(wl.answer())
        response = (
            f"I think it is {', '.join(words)}, as we can see in the list; no other word "
            "comes close, so that is my answer and it is a sure one."
        )
        got = score_words(
            response, values=words, targets=[True] * top, kind="words", vocabulary=wl.vocabulary()
        )
        assert got.verdict == "PASS", (s, sorted(set(response.lower().split()) & wl.vocabulary()))
