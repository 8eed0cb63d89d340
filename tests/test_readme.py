"""The README and docs/ pages: measured blocks generated from committed artifacts, never typed;
the README kept short, its set-up commands the ones CI runs, and links between pages resolving."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_BYTES = 12_000
# Pages the README and docs link to that other changes generate or write (docs/records.md from
# the record type, docs/add-architecture.md with niah/gguf/archs): a link to one is accepted
# while the page is absent from this checkout.
WRITTEN_ELSEWHERE = {"docs/records.md", "docs/add-architecture.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _tool():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", ROOT / "scripts" / "readme_tables.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TOOL = _tool()
PAGES = TOOL.pages()
PAGE_IDS = [str(p.relative_to(ROOT)) for p in PAGES]


def test_the_check_covers_the_readme_and_every_docs_page():
    names = set(PAGE_IDS)
    assert "README.md" in names
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= names
    assert "docs/measured.md" in names


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_generated_blocks_match_their_artifacts(page):
    text = page.read_text()
    assert TOOL.render(text) == text, (
        f"{page.relative_to(ROOT)} is out of date: run python scripts/readme_tables.py"
    )


def test_the_readme_and_measured_page_hold_generated_blocks():
    for name in ("README.md", "docs/measured.md"):
        assert TOOL.BLOCK.search((ROOT / name).read_text()), f"{name} has no generated blocks"


# docs/records.md is generated from the record type (niah.run.records) and checked against it
# by tests/test_records.py: its table describes fields, it holds no measurement
MEASURED_PAGES = [p for p in PAGES if p.name != "records.md"]


@pytest.mark.parametrize("page", MEASURED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_measured_table_outside_generated_blocks(page):
    text = TOOL.BLOCK.sub("", page.read_text())
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    # a digit outside inline code (`gpt2`, `niah/gguf/...` name things, they measure nothing)
    typed = [
        line
        for line in text.splitlines()
        if line.startswith("|") and re.search(r"\d", re.sub(r"`[^`]*`", "", line))
    ]
    assert typed == []


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if TOOL.BLOCK.search(p.read_text())],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_a_typed_number_in_a_block_is_caught(page):
    text = page.read_text()
    for m in TOOL.BLOCK.finditer(text):
        tampered = text[: m.start(4)] + m.group(4).replace("|", "| 99 |", 1) + text[m.end(4) :]
        assert TOOL.render(tampered) != tampered


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes: move detail into docs/ (at most {README_MAX_BYTES})"
    )


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_setup_commands_are_the_ones_ci_runs():
    main, tests = _setup_commands()
    assert main.startswith("bash scripts/setup.sh && ") and "\n" not in main
    assert tests.startswith("bash scripts/setup.sh --test && ") and "\n" not in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in [line.split(" || ")[0] for line in ci_lines]  # `|| status=$?` may follow
    workflow = (ROOT / ".github" / "workflows" / "linux.yml").read_text()
    runs = [line.split("run:", 1)[1].strip() for line in workflow.splitlines() if "run:" in line]
    assert main in runs and tests in runs


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_between_pages_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        name = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if name not in WRITTEN_ELSEWHERE:
                broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def _layout_tree() -> list[tuple[str, str]]:
    """(path, line) for each entry under `niah/` in docs/development.md's layout tree: two
    spaces of indent per folder level, the name first on its line."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, flags=re.S).group(1)
    entries, stack = [], []
    inside = False
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0] if line.strip() else ""
        if indent == 0:
            inside = name == "niah/"
            stack = ["niah"]
            continue
        if not inside:
            continue
        assert indent % 2 == 0 and indent // 2 <= len(stack), f"misaligned tree line: {line!r}"
        stack = stack[: indent // 2] + [name.rstrip("/")]
        entries.append(("/".join(stack), line))
    return entries


def test_the_layout_tree_lists_every_module_once():
    """docs/development.md's tree has one line per module of niah/, matching the real tree."""
    listed = [path for path, _ in _layout_tree() if path.endswith(".py")]
    real = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "niah").rglob("*.py"))
    twice = sorted({p for p in listed if listed.count(p) > 1})
    assert not twice, f"docs/development.md lists these modules twice: {twice}"
    missing = sorted(set(real) - set(listed))
    assert not missing, f"add a line for each to the tree in docs/development.md: {missing}"
    gone = sorted(set(listed) - set(real))
    assert not gone, f"docs/development.md lists modules that do not exist: {gone}"
    folders = [path for path, _ in _layout_tree() if not path.endswith(".py")]
    assert all((ROOT / f).is_dir() for f in folders), folders


def test_the_example_task_row_is_a_valid_task(tmp_path):
    """The row shown under "Add a task" loads as a task with the shipped rules."""
    from niah.tasks import load_specs

    text = (ROOT / "docs" / "development.md").read_text()
    row = re.search(r"## Add a task\n.*?```json\n(.*?)\n```", text, flags=re.S).group(1)
    (tmp_path / "tasks.jsonl").write_text(row + "\n")
    assert list(load_specs(tmp_path / "tasks.jsonl")) == ["two-keys"]


def test_bench_block_keeps_every_env_setting_and_cells_without_a_decode_speed(
    tmp_path, monkeypatch
):
    # peak_repeat --runs prints '-' for a cell none of whose trials decoded: the cell keeps its
    # speed columns; every MLX_* line of the header goes into the command shown
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "# command: python benchmarks/peak_repeat.py --runs x\n"
        "# env: MLX_MAX_MB_PER_BUFFER=100\n"
        "# env: MLX_MAX_OPS_PER_BUFFER=10 MLX_USE_CUDA_GRAPHS=0 (set for the probe)\n"
        "# commit: abc1234\n# device: cuda (NVIDIA H100)\n# date: 2026-12-06\n"
        "cell ctx 4096 kv None: 4 trials, peak 3.084-3.084 GiB, spread 0.0% | median prefill "
        "55412 tok/s, decode - tok/s\n"
        "cell ctx 8192 kv 8: 2 trials, peak 3.100-3.200 GiB, spread 3.2% | median prefill "
        "- tok/s, decode 150.5 tok/s\n"
    )
    monkeypatch.setattr(TOOL, "ROOT", tmp_path)  # raw outputs are named from the checkout
    block = TOOL.bench_block(raw).splitlines()
    assert (
        block[0].startswith("Raw output `")
        and "`MLX_MAX_MB_PER_BUFFER=100 MLX_MAX_OPS_PER_BUFFER=10 MLX_USE_CUDA_GRAPHS=0 python "
        in (block[0])
    )
    assert block[2].endswith("| median prefill tok/s | median decode tok/s |")
    assert block[4:] == [
        "| 4096 | None | 4 | 3.084 | 3.084 | 0.0% | 55412 | - |",
        "| 8192 | 8 | 2 | 3.100 | 3.200 | 3.2% | - | 150.5 |",
    ]
