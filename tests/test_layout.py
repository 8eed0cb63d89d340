"""The layout's rules, read from the source with ast (nothing is imported): modules of at most
MAX_MODULE_LINES lines of code, functions of at most MAX_FUNCTION_LINES, a docstring atop every
file, no import cycle, and imports that only run down the layers (docs/development.md#layout).
A line of code holds a token other than a comment: blank lines, comments and docstrings do not
count, so the limits measure what a reader must follow, not how the formatter wraps it."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "niah"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# The command-line layer: only it and niah.__main__ import these.
CLI_LAYER = {
    "niah.cli",
    "niah.cli_common",
    "niah.commands",
    "niah.options",
    "niah.progress",
    "niah.outputs",
}


def _sources() -> dict[str, Path]:
    """Every module of niah by dotted name (a package by its own name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


SOURCES = _sources()


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under `if TYPE_CHECKING:` (never run, so no runtime edge)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        lines.add(inner.lineno)
    return lines


def _imports(name: str, path: Path) -> set[str]:
    """The niah modules `name` imports, at the top or inside functions: `from X import y`
    counts as an import of X.y where that is a module, else of X."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "niah"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "niah":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & SOURCES.keys()
            found |= subs or {target}
    found.discard(name)
    return {m for m in found if m in SOURCES}


GRAPH = {name: _imports(name, path) for name, path in SOURCES.items()}


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
        ):
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def _code_lines(text: str) -> set[int]:
    """Line numbers holding code: a token other than a comment, outside docstrings."""
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    docs = _docstring_lines(ast.parse(text))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return lines


def _module_lines(path: Path) -> int:
    return len(_code_lines(path.read_text()))


def _functions(tree: ast.Module, code: set[int]):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, sum(node.lineno <= n <= node.end_lineno for n in code)


def test_every_module_fits_and_says_its_concept():
    too_long, no_doc = [], []
    for path in SOURCES.values():
        text = path.read_text()
        if _module_lines(path) > MAX_MODULE_LINES:
            too_long.append(f"{_rel(path)}: {_module_lines(path)} lines of code")
        if not ast.get_docstring(ast.parse(text)):
            no_doc.append(_rel(path))
    assert not too_long, f"split these modules (at most {MAX_MODULE_LINES} lines): {too_long}"
    assert not no_doc, f"give these files a docstring saying their one concept: {no_doc}"


def test_every_function_reads_at_once():
    long = [
        f"{_rel(path)}:{node.lineno} {node.name}: {n} lines"
        for path in SOURCES.values()
        for node, n in _functions(ast.parse(path.read_text()), _code_lines(path.read_text()))
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {long}"


def _cycle() -> list[str] | None:
    """One import cycle among niah's modules, as the path that closes it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(GRAPH[name]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (found := visit(name)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# (package, the niah modules outside it that it may import)
LOWER_LAYERS = [
    ("niah.kernels", {"niah.backend"}),
    ("niah.sdpa", {"niah.backend", "niah.errors", "niah.kernels"}),
]


@pytest.mark.parametrize("package,allowed", LOWER_LAYERS, ids=[p for p, _ in LOWER_LAYERS])
def test_lower_layers_import_nothing_above_them(package, allowed):
    """kernels is the bottom layer (it asks only niah.backend); sdpa sits on kernels."""
    upward = sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if _in(name, package)
        for dep in deps
        if not _in(dep, package) and not any(_in(dep, a) for a in allowed)
    )
    assert not upward, f"imports that run back up out of {package}: {upward}"


def test_only_the_command_line_imports_the_command_line():
    """run/, report/, tasks/, gguf/ and every other module are called by the CLI, never the
    reverse: only the CLI layer itself and niah.__main__ import it."""
    wrong = sorted(
        f"{name} -> {dep}"
        for name, deps in GRAPH.items()
        if name not in CLI_LAYER and name != "niah.__main__"
        for dep in deps & CLI_LAYER
    )
    assert not wrong, f"imports of the command-line layer from below it: {wrong}"
    assert "niah.cli" in GRAPH["niah.__main__"]
