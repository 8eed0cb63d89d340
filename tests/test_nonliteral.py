"""--task non-literal (NoLiMa's idea on data written for niah): the shipped pairs share no
content word between needle and question, names and key words occur in no shipped haystack,
the trial is deterministic and redrawn away from the haystack, scoring by name refuses hedges
and partial names, the report normalises by the short-context base score, and a CLI run on the
real SmolLM2 is deterministic from the seed."""

import re
from itertools import islice

import pytest
from conftest import invoke, read_records

from niah import tasks
from niah.datasets import character_names, haystack_path
from niah.errors import NiahError
from niah.haystack import match_text
from niah.prose import NOISE_PARAGRAPH, prose_sentences
from niah.report import effective_normalised, normalised_by_context, task_lines, task_table
from niah.scoring import SCORING_RULES

TASK = "non-literal"


def _fields():
    f = tasks.resolve(task=TASK, needles=None, needle=None, question=None, answer_prefix=None)
    f.pop("max_tokens")
    return f


def _trial(*, key="c1024-d0.5-s0", seed=0, reject=None):
    f = _fields()
    return tasks.make_trial(
        task=TASK,
        needles=1,
        depth=0.5,
        seed=seed,
        value_key=key,
        kind="number",
        needle=f["needle"],
        question=f["question"],
        answer_prefix=f["answer_prefix"],
        keys=(),
        reject=reject,
    )


def _shipped_haystacks() -> dict[str, str]:
    texts = {name: haystack_path(name).read_text(encoding="utf-8") for name in ("zh", "ja", "log")}
    texts["noise"] = NOISE_PARAGRAPH
    texts["prose"] = " ".join(islice(prose_sentences(seed=0), 60000))
    return {name: match_text(text) for name, text in texts.items()}


def test_at_least_40_pairs_share_no_content_word():
    pairs = tasks.load_pairs()
    assert len(pairs) >= 40
    assert len({p.needle for p in pairs}) == len(pairs)
    wrapper = tasks.get_spec(TASK).question
    for p in pairs:
        asked = wrapper.replace("{question}", p.question)  # what the model reads
        shared = tasks.content_words(p.needle) & tasks.content_words(asked)
        assert not shared, (p.needle, asked, shared)
        cue, target = p.keywords[0], p.keywords[-1]
        assert cue.lower() in p.needle.lower() and target.lower() in p.question.lower(), p
        assert target.lower() not in p.needle.lower()
        assert p.link and p.needle.count("{name}") == 1


def test_content_word_check_catches_a_shared_word():
    assert tasks.content_words("{name}'s flat is in Kyoto.") & tasks.content_words(
        "Which character lives in Kyoto?"
    ) == {"kyoto"}


def test_names_and_key_words_occur_in_no_shipped_haystack():
    names = character_names()
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert not [(a, b) for a in names for b in names if a != b and a.lower() in b.lower()]
    hays = _shipped_haystacks()
    words = set().union(
        *(tasks.content_words(p.needle + " " + p.question) for p in tasks.load_pairs())
    )
    for name in names:
        assert name.lower() not in words
        assert not [h for h, text in hays.items() if match_text(name) in text], name
    for p in tasks.load_pairs():
        for k in p.keywords:
            assert not [h for h, text in hays.items() if match_text(k) in text], (k, p.link)


def test_trial_is_deterministic_and_the_same_pair_at_every_context():
    a = _trial()
    assert a == _trial()
    assert a.expected[0] in character_names() and len(a.needles) == 1
    assert "{" not in a.question and "{value}" in a.needle_template
    pair = next(p for p in tasks.load_pairs() if p.question in a.question)
    assert a.needle_template == pair.needle.replace("{name}", "{value}")
    assert _trial(key="c8192-d0.5-s0") == a  # the context does not change the pair
    others = {
        (_trial(key=f"c1024-d0.5-s{i}").question, _trial(key=f"c1024-d0.5-s{i}").expected)
        for i in range(6)
    }
    assert len(others) > 1


def test_a_pair_or_name_in_the_haystack_is_redrawn_and_all_refused():
    first = _trial()
    pair = next(p for p in tasks.load_pairs() if p.question in first.question)
    held = {match_text(pair.keywords[-1]), match_text(first.expected[0])}
    redrawn = _trial(reject=lambda text: match_text(text) in held)
    assert pair.question not in redrawn.question
    assert redrawn.expected != first.expected
    with pytest.raises(NiahError, match="key words of every link"):
        _trial(reject=lambda text: True)


@pytest.mark.parametrize(
    "response,verdict",
    [
        ("Mira", "PASS"),
        ("The character is Mira.", "PASS"),
        ("mira's the one who lives there", "PASS"),
        ("<think>Tobias? no.</think> Mira", "PASS"),
        ("Mira or Tobias", "FAIL"),  # a hedge naming another character
        ("Tobias", "FAIL"),
        ("Mir", "FAIL"),  # a partial name
        ("Miranda", "FAIL"),  # not the name as a whole word
        ("nobody", "FAIL"),
        ("   ", "NULL"),
    ],
)
def test_name_scoring(response, verdict):
    s = SCORING_RULES["name"](response, values=["Mira"], targets=[True], kind="number")
    assert s.verdict == verdict
    assert s.score == (1.0 if verdict == "PASS" else 0.0)
    assert s.found == (verdict == "PASS" or response == "Mira or Tobias",)


def _recs(task, context, passed, n):
    return [
        {
            "task": task,
            "context": context,
            "depth": 0.5,
            "sample": i,
            "model": "m",
            "device": "d",
            "verdict": "PASS" if i < passed else "FAIL",
        }
        for i in range(n)
    ]


def test_normalised_scores_and_effective_length():
    recs = (
        _recs(TASK, 1024, 3, 4)
        + _recs(TASK, 2048, 1, 4)
        + _recs(TASK, 4096, 2, 4)
        + _recs(TASK, 8192, 1, 4)
    )
    # base score: the mean at contexts <= 2K = 4/8
    assert normalised_by_context(recs) == {1024: 1.5, 2048: 0.5, 4096: 1.0, 8192: 0.5}
    assert effective_normalised(recs, threshold=0.5) == 8192
    assert effective_normalised(recs, threshold=0.85) == 1024  # 2K falls below: walk stops
    assert normalised_by_context(_recs(TASK, 1024, 0, 2) + _recs(TASK, 4096, 1, 2)) == {
        1024: None,
        4096: None,
    }  # no base to divide by


def test_report_prints_task_by_context_table():
    recs = (
        _recs(TASK, 1024, 2, 4)
        + _recs(TASK, 4096, 1, 4)
        + _recs("single", 1024, 4, 4)
        + _recs("single", 4096, 4, 4)
    )
    table = task_table(recs, threshold=0.85).splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["Task", "1K", "4K", "Effective"]
    assert re.split(r"\s{2,}", table[1]) == [TASK, "50%", "25%"]
    assert re.split(r"\s{2,}", table[2]) == [f"{TASK} (normalised)", "100%", "50%", "1K"]
    assert re.split(r"\s{2,}", table[3]) == ["single", "100%", "100%", "4K"]
    lines = task_lines(recs, threshold=0.85)
    assert any("base score 50%" in line for line in lines)
    assert task_lines(_recs("single", 1024, 1, 1)) == []  # one plain task: no table


BAD = [
    (
        ["--context", "4k,8k"],
        "error: --task non-literal needs a context of 2K or less in --context for its base score (scores are normalised by it): add one, e.g. --context 1k,4K,8K",
    ),
    (
        ["--needle", "Here is {value}."],
        "error: --task non-literal draws its needle from niah/datasets/nonliteral.jsonl for each trial: drop --needle",
    ),
    (
        ["--question", "Who is it?"],
        "error: the --question of --task non-literal has no {question} placeholder (the drawn question): write it like '{question} Answer with the name only.'",
    ),
    (
        ["--value-kind", "uuid"],
        "error: --task non-literal does not take --value-kind uuid: use number",
    ),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_one_line_before_the_model(tmp_path, args, message):
    result = invoke(
        [
            "run",
            "--task",
            TASK,
            *args,
            "--out",
            str(tmp_path),
            "--model",
            str(tmp_path / "no-model"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert result.stderr == message + "\n"


def _run(out):
    result = invoke(
        [
            "run",
            "--task",
            TASK,
            "--context",
            "256,1024",
            "--depth",
            "0.5",
            "--samples",
            "2",
            "--out",
            str(out),
            "-q",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    folder = next(p for p in out.iterdir() if p.is_dir())
    recs = read_records(folder)
    return folder, result.output, sorted(recs, key=lambda r: (r["context"], r["sample"]))


@pytest.mark.slow
def test_cli_runs_non_literal_end_to_end_deterministically(tmp_path, gguf_path):
    folder, output, recs = _run(tmp_path / "a")
    _, _, again = _run(tmp_path / "b")
    fields = ("value", "needle_index", "context_tokens", "response", "verdict", "needles")
    assert [{k: r[k] for k in fields} for r in recs] == [{k: r[k] for k in fields} for r in again]
    assert len(recs) == 4 and {r["task"] for r in recs} == {TASK}
    assert {r["context_tokens"] for r in recs} == {256, 1024}
    by_sample = {}
    for r in recs:
        assert r["value"] in character_names()
        by_sample.setdefault(r["sample"], set()).add(r["value"])
        rescored = SCORING_RULES["name"](
            r["response"], values=[r["value"]], targets=[True], kind="number"
        )
        assert (rescored.verdict, rescored.score) == (r["verdict"], r["score"])
    assert all(len(v) == 1 for v in by_sample.values())  # the same character at every context
    assert f"{TASK} (normalised)" in output
    report = invoke(["report", str(folder)], catch_exceptions=False)
    assert report.exit_code == 0, report.output
    assert f"{TASK} (normalised)" in report.output and "Effective" in report.output
