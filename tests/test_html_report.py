"""The HTML report (niah/report/html.py): a valid self-contained page for every committed
reference run; untrusted text escaped; and, in headless Chromium (tests/browser.py), no console
error or network request, one heatmap cell per (context, depth), a FAIL cell's answer on click,
changed cells marked in a comparison, an injected <script> never run. Where no browser exists
the browser tests skip with the reason, unless NIAH_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import INSTALL_HINT, Browser, find_chromium
from conftest import invoke, read_records

from niah.store import folder_records

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"
FOLDERS = sorted(p for p in REFERENCE.iterdir() if (p / "trials.jsonl").is_file())
SMALL = REFERENCE / "smollm2-cpu-2026-11-27"  # 3 contexts x 3 depths x 2 samples
CURVE = REFERENCE / "qwen05-curve-h100-2026-11-28"  # FAIL cells past the trained length
REF_128K = REFERENCE / "qwen15-128k-stock-h100-2026-11-28"
HOSTILE = (
    "</script><script>window.__niah_pwned = 1</script>"
    '<img src="x" onerror="window.__niah_pwned = 2"><!-- & \u2028'
)


def _report(*args):
    return invoke(["report", *map(str, args)], catch_exceptions=False)


class _Page(HTMLParser):
    """What a page holds: its tags, attributes naming other resources, the data script."""

    def __init__(self):
        super().__init__()
        self.tags, self.links, self.data, self._in_data = [], [], [], False
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.links += [attrs[k] for k in ("src", "href", "action") if k in attrs]
        self.scripts += tag == "script"
        self._in_data = tag == "script" and attrs.get("type") == "application/json"

    def handle_endtag(self, tag):
        self._in_data = False

    def handle_data(self, data):
        if self._in_data:
            self.data.append(data)


def _parse(path: Path) -> tuple[_Page, dict]:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page, json.loads("".join(page.data))


def _copy(tmp_path, source: Path, name: str, mutate) -> Path:
    dst = tmp_path / name
    shutil.copytree(source, dst)
    recs = read_records(dst)
    (dst / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mutate(recs)))
    return dst


def _hostile(tmp_path) -> Path:
    """A copy of SMALL whose first trial answered with markup and whose needle carries an
    excerpt of a haystack holding markup."""

    def plant(recs):
        recs[0].update(verdict="FAIL", score=0.0, response=HOSTILE, model="<b>m</b>")
        recs[0]["needles"] = [
            {
                "role": "target",
                "value": recs[0]["value"],
                "excerpt": HOSTILE,
                "needle_index": 5,
                "needle_depth": 0.0,
                "boundary": "sentence",
            }
        ]
        return recs

    return _copy(tmp_path, SMALL, "hostile", plant)


def _pairs(run: dict) -> dict[str, set]:
    return {g["name"]: {(t["context"], t["depth"]) for t in g["trials"]} for g in run["groups"]}


# ---- the page as a file (no browser) -----------------------------------------------------


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_every_reference_run_writes_a_valid_self_contained_page(tmp_path, folder):
    out = tmp_path / "report.html"
    result = _report(folder, "--html", out)
    assert result.exit_code == 0, result.output
    page, data = _parse(out)
    assert page.tags[0] == "html" and page.links == [] and page.scripts == 2
    assert "Content-Security-Policy" in out.read_text() and "default-src 'none'" in out.read_text()
    records = folder_records(folder)
    (run,) = data["runs"]
    assert run["trials"] == len(records) == sum(len(g["trials"]) for g in run["groups"])
    assert set().union(*_pairs(run).values()) == {(r["context"], r["depth"]) for r in records}
    assert run["identity"] and dict(run["identity"])["Model"] == records[0]["model"]
    assert data["changes"] == [] and run["wilson"] is not None


def test_identity_names_command_versions_and_digest():
    from niah.report.html import identity

    ident = dict(identity([REF_128K], folder_records(REF_128K)))
    assert ident["Command"].startswith("niah run --model /root/models/qwen2.5-coder-1.5b")
    assert "MLX 0.32.4" in ident["Versions"] and "mlx-lm 0.32.2" in ident["Versions"]
    assert ident["Model digest"].startswith("cc324af070c2") and ident["Backend"] == "cuda float16"
    assert ident["Attention route"] == "--sdpa stock: ran stock"


def test_untrusted_text_cannot_leave_the_data_script(tmp_path):
    out = tmp_path / "r.html"
    assert _report(_hostile(tmp_path), "--html", out).exit_code == 0
    text = out.read_text(encoding="utf-8")
    assert "__niah_pwned" in text and "<script>window" not in text and "<img" not in text
    assert text.count("</script>") == 2 and "<!--" not in text.split("<main", 1)[1]
    data = _parse(out)[1]
    first = min(
        (t for g in data["runs"][0]["groups"] for t in g["trials"]),
        key=lambda t: (t["context"], t["depth"], t["sample"]),
    )
    assert first["response"] == HOSTILE and first["needles"][0]["excerpt"] == HOSTILE
    assert "<b>" not in text.split("</title>")[0]  # the model name in the title is escaped


def test_one_heatmap_per_kv_setting_and_task(tmp_path):
    def split(recs):
        for i, r in enumerate(recs):
            r["kv_bits"] = 4 if i % 2 else None
        return recs

    out = tmp_path / "r.html"
    assert _report(_copy(tmp_path, SMALL, "kv", split), "--html", out).exit_code == 0
    groups = [g["name"] for g in _parse(out)[1]["runs"][0]["groups"]]
    assert groups == ["single", "single kv4"]


def test_compare_lists_the_changed_cell(tmp_path):
    changed = _copy(tmp_path, REF_128K, "changed", _fail_at_half)
    out = tmp_path / "c.html"
    result = _report(REF_128K, changed, "--compare", "--html", out)
    assert result.exit_code == 0, result.output
    data = _parse(out)[1]
    assert [r["name"] for r in data["runs"]] == [REF_128K.name, "changed"]
    assert [
        (c["run"], c["context"], c["depth"], c["before"], c["after"]) for c in data["changes"]
    ] == [(1, 131072, 0.5, "PASS", "FAIL")]


def test_bad_html_path_is_one_line(tmp_path):
    result = _report(SMALL, "--html", tmp_path / "missing" / "r.html")
    assert result.exit_code == 2 and "folder" in result.stderr and "does not exist" in result.stderr
    result = _report(SMALL, "--html", tmp_path)
    assert result.exit_code == 2 and "is a folder" in result.stderr


def _fail_at_half(recs):
    for r in recs:
        if r["depth"] == 0.5:
            r.update(verdict="FAIL", score=0.0, response=" I could not find it.")
    return recs


# ---- in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        if os.environ.get("NIAH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NIAH_REQUIRE_BROWSER=1 but no browser was found: {INSTALL_HINT}")
        pytest.skip(f"no Chromium or Chrome found: {INSTALL_HINT}")
    with Browser(binary) as b:
        yield b


def _cell(context: int, depth: float) -> str:
    """JavaScript for the heatmap button of a (context, depth) cell."""
    return (
        f"[...document.querySelectorAll('button.cell')].find(b => "
        f"+b.dataset.context === {context} && +b.dataset.depth === {depth!r})"
    )


def _open(browser, path: Path) -> None:
    browser.open(path)
    assert browser.problems() == [], browser.problems()
    assert browser.requests() == [], browser.requests()


def test_browser_reference_pages_load_cleanly_one_cell_per_context_and_depth(tmp_path, browser):
    for folder in FOLDERS:
        out = tmp_path / f"{folder.name}.html"
        assert _report(folder, "--html", out).exit_code == 0
        _open(browser, out)
        want = _pairs(_parse(out)[1]["runs"][0])
        got = browser.eval("""[...document.querySelectorAll('table.heatmap')].map(t =>
            [...t.querySelectorAll('button.cell')].map(b => [+b.dataset.context, +b.dataset.depth]))""")
        assert [len(cells) for cells in got] == [len(p) for p in want.values()], folder.name
        assert [{tuple(c) for c in cells} for cells in got] == list(want.values()), folder.name


def test_browser_clicking_a_fail_cell_shows_its_answer(tmp_path, browser):
    out = tmp_path / "curve.html"
    assert _report(CURVE, "--html", out).exit_code == 0
    _open(browser, out)
    fails = [r for r in folder_records(CURVE) if r["verdict"] == "FAIL"]
    assert fails
    for r in fails:
        shown = browser.eval(f"""(() => {{
            const b = {_cell(r["context"], r["depth"])};
            b.click();
            const d = b.closest('.group').querySelector('.detail');
            return [b.getAttribute('aria-pressed'), d.querySelector('.answer').textContent,
                    d.querySelector('.badge').textContent, d.textContent];
        }})()""")
        assert shown[:3] == ["true", r["response"], "FAIL"], shown[:3]
        assert f"Value {r['value']} not in the answer" in shown[3]


def test_browser_keyboard_selects_a_cell(tmp_path, browser):
    out = tmp_path / "small.html"
    assert _report(SMALL, "--html", out).exit_code == 0
    _open(browser, out)
    browser.eval("document.querySelector('button.cell').focus()")
    for key, code in (("ArrowDown", 40), ("ArrowRight", 39), ("Enter", 13)):
        for kind in ("rawKeyDown", "keyUp"):
            browser.send(
                "Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code
            )
        if key == "Enter":
            browser.send("Input.dispatchKeyEvent", type="char", text="\r")
    picked = browser.eval("""(() => { const b = document.activeElement;
        return [b.dataset.row, b.dataset.col, b.getAttribute('aria-pressed'),
                document.querySelector('.detail h4').textContent]; })()""")
    assert picked == ["1", "1", "true", "Context 2K · depth 50% · 2 trials"], picked


def test_browser_compare_marks_the_changed_cell(tmp_path, browser):
    changed = _copy(tmp_path, REF_128K, "changed", _fail_at_half)
    out = tmp_path / "c.html"
    assert _report(REF_128K, changed, "--compare", "--html", out).exit_code == 0
    _open(browser, out)
    marked = browser.eval("""[...document.querySelectorAll('button.cell.changed')].map(b =>
        [b.closest('section').id, b.dataset.context, b.dataset.depth, b.dataset.verdicts])""")
    assert marked == [["run-1", "131072", "0.5", "FAIL"]]
    rows = browser.eval("[...document.querySelectorAll('table.changes tbody tr')].length")
    assert rows == 1
    browser.eval("document.querySelector('table.changes button').click()")
    assert (
        browser.eval(
            "document.activeElement.classList.contains('changed') && "
            "document.activeElement.getAttribute('aria-pressed')"
        )
        == "true"
    )


def test_browser_injected_script_in_an_answer_does_not_run(tmp_path, browser):
    out = tmp_path / "hostile.html"
    assert _report(_hostile(tmp_path), "--html", out).exit_code == 0
    _open(browser, out)
    browser.eval(_cell(1024, 0.0) + ".click()")
    state = browser.eval("""(() => { const d = document.querySelector('.detail');
        return [typeof window.__niah_pwned, d.querySelectorAll('img, script').length,
                [...d.querySelectorAll('.answer')].map(a => a.textContent), document.title]; })()""")
    assert state[0] == "undefined" and state[1] == 0
    assert state[2][:2] == [HOSTILE, HOSTILE]  # sample 0: its answer and excerpt, as text
    assert state[3].startswith("niah report: <b>m</b>")
    assert browser.problems() == [] and browser.requests() == []


def test_screenshot_helper_writes_a_png(tmp_path, browser):
    import subprocess
    import sys

    out = tmp_path / "r.html"
    assert _report(REF_128K, "--html", out).exit_code == 0
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "browser.py"),
            str(out),
            str(tmp_path / "r.png"),
            "--click",
            "button.cell",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(rb"IHDR", (tmp_path / "r.png").read_bytes()[:32])


# ---- the GitHub Action -------------------------------------------------------------------


def _action() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_yaml_declares_its_inputs_and_steps():
    action = _action()
    assert {"model", "contexts", "depths", "task", "fail-under", "options"} <= set(action["inputs"])
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    assert "scripts/setup.sh" in steps[0]["run"] and (ROOT / "scripts" / "setup.sh").is_file()
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert upload["with"]["path"] == "${{ inputs.output-dir }}"
    sweep = next(s for s in steps if s.get("id") == "sweep")
    assert "${{" not in sweep["run"]  # inputs come in through env, never pasted into the script
    assert set(sweep["env"]) >= {
        "NIAH_MODEL",
        "NIAH_CONTEXTS",
        "NIAH_DEPTHS",
        "NIAH_TASK",
        "NIAH_FAIL_UNDER",
        "NIAH_OPTIONS",
        "NIAH_OUTPUT_DIR",
    }


@pytest.mark.slow
def test_action_sweep_step_runs_on_the_embedded_model(tmp_path):
    """The action's shell step as GitHub would run it (inputs as env), with `niah` on PATH."""
    import subprocess
    import sys

    sweep = next(s for s in _action()["runs"]["steps"] if s.get("id") == "sweep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "niah").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m niah "$@"\n')
    (bin_dir / "niah").chmod(0o755)
    inputs = {k: str(v.get("default", "")) for k, v in _action()["inputs"].items()}
    inputs.update(contexts="1k", depths="0.5", **{"fail-under": "1.0", "options": "-q --seed 1"})
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
    }
    for name, value in sweep["env"].items():
        env[name] = re.sub(r"\$\{\{ inputs\.([\w-]+) \}\}", lambda m: inputs[m.group(1)], value)
    done = subprocess.run(
        ["bash", "-c", sweep["run"]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "niah-report"
    assert {p.name for p in out.iterdir()} >= {"niah.html", "niah.xml", "niah.csv", "runs"}
    assert (tmp_path / "github_output").read_text() == "report=niah-report/niah.html\n"
    assert "<testsuite" in (out / "niah.xml").read_text()
    assert _parse(out / "niah.html")[1]["runs"][0]["trials"] == 1
