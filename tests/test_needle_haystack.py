"""--haystack needles (RULER's MK-NIAH with a haystack of distractor needles): the haystack is
only needle-form sentences with keys no trial asks, trial values never occur in it, prompts
stay token-exact and keep the depth rule, a run is deterministic from the seed, and the source
is refused for tasks without keys before the model loads."""

from __future__ import annotations

import json
import re

import pytest
from conftest import invoke

from niah import tasks
from niah.config import RunConfig
from niah.haystack import PromptBuilder
from niah.haystack_needles import haystack_keys
from niah.scoring import score_values


def _sentence(template: str) -> re.Pattern:
    """One haystack sentence of a needle template: a two-word key and a 7-digit value."""
    escaped = re.escape(" " + template)
    return re.compile(
        escaped.replace(re.escape("{key}"), "([a-z]+ [a-z]+)").replace(
            re.escape("{value}"), r"(\d{7})"
        )
    )


def _config(task="multi-key", seed=0, kind="number"):
    fields = tasks.resolve(
        task=task,
        needles=None,
        needle=None,
        question=None,
        answer_prefix=None,
        haystack="needles",
        value_kind=kind,
    )
    return RunConfig(model="x", haystack="needles", seed=seed, value_kind=kind, **fields)


def _builder(tokenizer, config):
    return PromptBuilder(
        tokenizer,
        source=tasks.haystack_source(config),
        seed=config.seed,
        needle=config.needle,
        question=config.question,
        answer_prefix=config.answer_prefix,
    )


def _haystack_sentences(builder, body: int) -> list[tuple[str, str]]:
    """(key, value) of every haystack sentence in the first `body` tokens; the text must be
    nothing but such sentences (the last one may be cut at the body's end)."""
    text = builder.tokenizer.decode(builder.haystack.ids[:body].tolist())
    sentence = _sentence(builder.needle)
    pairs = sentence.findall(text)
    rest = sentence.sub("", text)
    assert len(rest) < 80 and (" " + builder.needle).startswith(rest[:20]), rest
    return pairs


def test_haystack_keys_never_overlap_the_trial_keys():
    keys = tasks.load_keys()
    hay = haystack_keys(keys)
    assert len(hay) > 100
    for h in hay:
        for k in keys:
            assert h != k and f" {k} " not in f" {h} " and f" {h} " not in f" {k} "
    assert "oak door" not in haystack_keys(("door",))  # a one-word key inside one is refused


@pytest.mark.parametrize("task", ["multi-key", "multi-value", "multi-query"])
def test_only_needle_sentences_no_asked_key_no_trial_value(gguf_tokenizer, task):
    config = _config(task)
    builder = _builder(gguf_tokenizer, config)
    for context in (512, 1024):
        trial = tasks.trial_for(
            config,
            depth=0.5,
            value_key=f"c{context}",
            reject=lambda v, c=context: builder.value_occurs(v, context=c),
        )
        prompt = tasks.build_prompt(builder, trial, context=context)
        assert len(prompt.ids) == context
        pairs = _haystack_sentences(builder, prompt.body_tokens)
        assert len(pairs) > 10
        trial_keys = {n.key for n in trial.needles} | set(config.keys)
        assert not {k for k, _ in pairs} & trial_keys
        assert not {v for _, v in pairs} & {n.value for n in trial.needles}
        for place, needle in zip(prompt.placements, trial.needles, strict=True):
            assert abs(place.depth - needle.depth) <= 0.01


def test_a_haystack_value_offered_is_wrong(gguf_tokenizer):
    config = _config()
    builder = _builder(gguf_tokenizer, config)
    trial = tasks.trial_for(
        config, depth=0.5, value_key="s", reject=lambda v: builder.value_occurs(v, context=1024)
    )
    prompt = tasks.build_prompt(builder, trial, context=1024)
    (_, hay_value), *_ = _haystack_sentences(builder, prompt.body_tokens)
    target = trial.expected[0]
    score = lambda text: tasks.score_trial(trial, prompt, text, kind="number")["verdict"]  # noqa: E731
    assert score(target) == "PASS"
    assert score(f"{target} or {hay_value}") == "FAIL" and score(hay_value) == "FAIL"
    assert score_values(hay_value, values=[target], targets=[True], kind="number").verdict == "FAIL"


def test_word_values_still_find_free_values(gguf_tokenizer):
    config = _config(kind="words")
    builder = _builder(gguf_tokenizer, config)
    trial = tasks.trial_for(
        config, depth=0.5, value_key="w", reject=lambda v: builder.value_occurs(v, context=8192)
    )
    assert all(not builder.value_occurs(n.value, context=8192) for n in trial.needles)


def test_needle_phrase_check_lets_it_pass_and_seed_changes_it(gguf_tokenizer):
    a, b = (_builder(gguf_tokenizer, _config(seed=s)) for s in (0, 1))
    a.check_phrases([a.needle], n_tokens=2048)  # would refuse any other haystack
    a.haystack.ensure(300), b.haystack.ensure(300)
    assert (a.haystack.ids[:300] != b.haystack.ids[:300]).any()


@pytest.mark.parametrize("task", ["single", "multi-needle", "variable-tracking", "common-words"])
def test_refused_for_tasks_without_keys(tmp_path, task):
    r = invoke(
        [
            "run",
            "--task",
            task,
            "--haystack",
            "needles",
            "-c",
            "1k",
            "--out",
            str(tmp_path),
            "--model",
            str(tmp_path / "none"),
        ]
    )
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert (
        f"--haystack needles fills the haystack with needles of a keyed task's form, and "
        f"--task {task} has no keys: use --task multi-key, multi-value or multi-query, or "
        "another --haystack"
    ) in r.output


def _records(out):
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    recs = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    return folder, {(r["context"], r["depth"]): r for r in recs}


@pytest.mark.slow
def test_cli_run_is_deterministic_and_keeps_the_depth_rule(tmp_path, gguf_path, gguf_tokenizer):
    args = ["run", "--task", "multi-key", "--haystack", "needles", "--seed", "3", "-q"]
    r = invoke(
        [*args, "-c", "512,1024", "-d", "0,1", "-o", str(tmp_path / "a")], catch_exceptions=False
    )
    assert r.exit_code in (0, 1), r.output
    r = invoke([*args, "-c", "512", "-d", "1", "-o", str(tmp_path / "b")], catch_exceptions=False)
    assert r.exit_code in (0, 1), r.output
    folder, recs = _records(tmp_path / "a")
    _, again = _records(tmp_path / "b")
    assert len(recs) == 4
    for field in ("value", "needles", "needle_index", "context_tokens", "response", "verdict"):
        assert again[(512, 1.0)][field] == recs[(512, 1.0)][field]
    config = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
    assert config.haystack == "needles"
    builder = _builder(gguf_tokenizer, config)
    for (context, depth), rec in recs.items():
        assert rec["context_tokens"] == context
        assert abs(rec["needle_depth"] - depth) <= 0.01  # the column's depth
        requested = tasks.spread_depths(depth, len(rec["needles"]))
        for n, want in zip(rec["needles"], requested, strict=True):
            assert abs(n["needle_depth"] - want) <= 0.01
        trial = tasks.trial_for(
            config,
            depth=depth,
            value_key=f"c{context}-d{depth:.6g}-s0",
            reject=lambda v, c=context: builder.value_occurs(v, context=c),
        )
        prompt = tasks.build_prompt(builder, trial, context=context)  # rebuilt from the seed
        assert prompt.needle_index == rec["needle_index"]
        assert [n.value for n in trial.needles] == [n["value"] for n in rec["needles"]]
        pairs = _haystack_sentences(builder, prompt.body_tokens)
        assert not {k for k, _ in pairs} & {n["key"] for n in rec["needles"]}
        assert not {v for _, v in pairs} & {n["value"] for n in rec["needles"]}
