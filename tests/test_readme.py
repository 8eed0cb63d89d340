"""The README's measured tables are generated from committed artifacts, never typed."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_blocks_match_their_artifacts():
    tool = _tool()
    text = (ROOT / "README.md").read_text()
    assert tool.BLOCK.search(text), "README has no generated blocks"
    assert tool.render(text) == text, "README.md is out of date: run python scripts/readme_tables.py"


def test_no_measured_table_outside_generated_blocks():
    tool = _tool()
    text = tool.BLOCK.sub("", (ROOT / "README.md").read_text())
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    typed = [line for line in text.splitlines() if line.startswith("|") and re.search(r"\d", line)]
    assert typed == []


def test_a_typed_number_in_a_block_is_caught(tmp_path):
    tool = _tool()
    text = (ROOT / "README.md").read_text()
    m = tool.BLOCK.search(text)
    tampered = text[:m.start(4)] + m.group(4).replace("|", "| 99 |", 1) + text[m.end(4):]
    assert tool.render(tampered) != tampered
