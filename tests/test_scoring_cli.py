"""The scoring rule through `niah run` on the real SmolLM2 at 1K: the model's real answer is
rewritten into the forms of issue #11 (full-width digits, a stray </think>, a longer number)
and the table and records must carry the rule's verdicts."""

import dataclasses
import re

import pytest
from conftest import invoke, read_records

FORMS = [
    (lambda r: r.translate({ord(c): 0xFF10 + int(c) for c in "0123456789"}), "PASS"),
    (lambda r: r + " </think> done", "PASS"),
    (lambda r: re.sub(r"(\d{7})", r"\g<1>8", r), "FAIL"),
]


@pytest.mark.slow
def test_cli_verdicts_follow_the_rule(tmp_path, gguf_path, monkeypatch):
    from niah.model import ModelSession

    original, calls = ModelSession.generate, []

    def rewritten(self, *a, **kw):
        gen = original(self, *a, **kw)
        form, _ = FORMS[len(calls)]
        calls.append(gen.response)
        return dataclasses.replace(gen, response=form(gen.response))

    monkeypatch.setattr(ModelSession, "generate", rewritten)
    out = tmp_path / "res"
    result = invoke(
        [
            "run",
            "--context",
            "1k",
            "--depth",
            "0,0.5,1",
            "--out",
            str(out),
            "-q",
            "--max-tokens",
            "16",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    folder = next(out.iterdir())
    recs = sorted(read_records(folder), key=lambda r: r["needle_index"])
    assert all(r["value"] in c for r, c in zip(recs, calls)), calls  # the real answers passed
    assert [r["verdict"] for r in recs] == [v for _, v in FORMS]
    row = [line for line in result.stdout.splitlines() if line.startswith("1K")][0]
    assert re.findall(r"PASS|FAIL", row) == ["PASS", "PASS", "FAIL"]
