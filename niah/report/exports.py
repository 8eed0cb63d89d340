"""The export registry: every file `niah run` and `niah report` can write besides the table.

EXPORTS maps a name to an Export: its CLI option, help, an example file name and the function
that writes it. Both commands take one option per entry and hand the paths to write_exports,
so adding an export is one writer function and one line in EXPORTS:

    def write_count(records, path, *, runs, **options):
        Path(path).write_text(f"{len(records)}\\n")

    EXPORTS["count"] = Export("--count", "Number of trials.", write_count, example="n.txt")

Every export is written atomically: into a temporary file beside the target, renamed over it
once complete, so a full disk or an interrupted write leaves no partial file (a device or pipe
such as /dev/stdout is written in place). A failed write is one NiahError line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import NiahError
from .heatmap import heatmap
from .junit import junit
from .plausibility import suspect
from .tables import format_markdown


@dataclass(frozen=True)
class Export:
    option: str  # the CLI option of both commands, e.g. "--csv"
    help: str
    write: Callable[..., None]  # write(records, path, *, runs, **options), see write_exports
    example: str  # a file name suggested when the path given is a folder
    suffixes: tuple[str, ...] = ()  # accepted file name suffixes (empty: any)


EXPORT_COLUMNS_FIRST = [
    "model",
    "context",
    "context_tokens",
    "depth",
    "needle_index",
    "needle_depth",
    "sample",
    "value",
    "response",
    "verdict",
    "score",
    "task",
    "prefill_s",
    "prefill_tps",
    "ttft_s",
    "decode_tps",
    "peak_memory_bytes",
    "sdpa_route",
]


def to_frame(records: list[dict]):
    """A pandas DataFrame, one row per trial: the main columns first, then the rest sorted,
    plus `suspect` (the plausibility guard's reason or None)."""
    import pandas as pd

    df = pd.DataFrame(records)
    first = [c for c in EXPORT_COLUMNS_FIRST if c in df.columns]
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest]
    df["suspect"] = [suspect(r) for r in records]
    if "needles" in df.columns:  # one JSON text per trial (CSV and Parquet keep it as text)
        df["needles"] = [json.dumps(v) if isinstance(v, list) else None for v in df["needles"]]
    return df


def write_csv(records: list[dict], path, *, runs, **options) -> None:
    to_frame(records).to_csv(path, index=False)


def _finite(value):
    """NaN / infinity (a field some records lack) as null: the JSON stays standard."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(records: list[dict], path, *, runs, **options) -> None:
    rows = [
        {k: _finite(v) for k, v in row.items()}
        for row in to_frame(records).to_dict(orient="records")
    ]
    Path(path).write_text(json.dumps(rows, indent=1, default=str, allow_nan=False))


def write_parquet(records: list[dict], path, *, runs, **options) -> None:
    try:
        to_frame(records).to_parquet(path, index=False)
    except ImportError:
        raise NiahError("Parquet export needs pyarrow: pip install pyarrow") from None


def write_markdown(records: list[dict], path, *, runs, compare: bool = False, **options) -> None:
    """The table of the records; with --compare one table per run (never one of them pooled)."""
    if compare:
        text = "\n".join(format_markdown(recs, title=Path(name).name) for name, recs in runs)
    else:
        text = format_markdown(records, title=", ".join(run_names(runs)))
    Path(path).write_text(text)


def write_heatmap(records: list[dict], path, *, runs, **options) -> None:
    heatmap(records, path, title=f"{records[0]['model']}" if records else None)


def write_junit(records: list[dict], path, *, runs, compare: bool = False, **options) -> None:
    junit(records, path, runs=runs if compare else None)


def write_html(
    records: list[dict],
    path,
    *,
    runs,
    compare: bool = False,
    effective_threshold: float | None = None,
    **options,
) -> None:
    from .html import DEFAULT_EFFECTIVE_THRESHOLD
    from .html import write_html as write_page

    threshold = DEFAULT_EFFECTIVE_THRESHOLD if effective_threshold is None else effective_threshold
    write_page(path, runs, compare=compare, effective_threshold=threshold)


def run_names(runs) -> list[str]:
    """The run folders' names, for titles."""
    return [Path(folder).name for folder, _ in runs]


EXPORTS: dict[str, Export] = {
    "markdown": Export("--markdown", "Write the table as Markdown.", write_markdown, "table.md"),
    "csv": Export("--csv", "One row per trial, every field.", write_csv, "niah.csv"),
    "json": Export("--json", "One object per trial.", write_json, "niah.json"),
    "parquet": Export(
        "--parquet", "One row per trial (needs pyarrow).", write_parquet, "niah.parquet"
    ),
    "heatmap": Export(
        "--heatmap",
        "PNG heatmap of accuracy (or .svg, .pdf).",
        write_heatmap,
        "heatmap.png",
        suffixes=(".png", ".svg", ".pdf"),
    ),
    "junit": Export("--junit", "JUnit XML, one testcase per trial.", write_junit, "niah.xml"),
    "html": Export(
        "--html", "The HTML report: one self-contained page.", write_html, "report.html"
    ),
}


def check_target(export: Export, path: Path) -> None:
    """Refuse, before any work, a path the export could not be written to."""
    option = export.option
    if path.is_dir():
        raise NiahError(
            f"{option} {str(path)!r} is a folder: give a file name like {export.example}"
        )
    if export.suffixes and path.suffix.lower() not in export.suffixes:
        kinds = ", ".join(export.suffixes[:-1]) + " or " + export.suffixes[-1]
        raise NiahError(
            f"{option} {str(path)!r} is not a {kinds} file: give a name like {export.example}"
        )
    parent = path.parent
    if not parent.is_dir():
        raise NiahError(
            f"cannot write {option} {str(path)!r}: folder {str(parent)!r} does not "
            "exist; create it first"
        )
    in_place = path.exists() and not path.is_file()  # a device or pipe
    if not os.access(path if in_place else parent, os.W_OK if in_place else os.W_OK | os.X_OK):
        raise NiahError(
            f"cannot write {option} {str(path)!r} (permission denied): choose a writable path"
        )


def check_targets(
    targets: dict[str, Path | None], *, registry: dict[str, Export] | None = None
) -> None:
    registry = EXPORTS if registry is None else registry
    for name, path in targets.items():
        if path is not None:
            check_target(registry[name], Path(path))


def write_exports(
    records: list[dict],
    targets: dict[str, Path | None],
    *,
    runs,
    registry: dict[str, Export] | None = None,
    **options,
) -> None:
    """Write each export whose path is given (registry order), each atomically. runs: the
    (run folder, its records) pairs shown; options (compare, effective_threshold) go to every
    writer, which takes what it needs."""
    registry = EXPORTS if registry is None else registry
    for name, export in registry.items():
        path = targets.get(name)
        if path is None:
            continue
        try:
            write_atomic(
                Path(path), lambda p, export=export: export.write(records, p, runs=runs, **options)
            )
        except OSError as exc:
            raise NiahError(_write_failed(export.option, path, exc)) from None


def _write_failed(option: str, path, exc: OSError) -> str:
    why = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return f"cannot write {option} {str(path)!r} ({why}): " + (
        "free space or choose another path" if full else "choose a writable path"
    )


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path) beside `path`, then rename it over `path`; on any failure
    the temporary file is removed and `path` is left as it was. A device or pipe is written
    in place (it cannot be renamed over)."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        write(path)  # by the name given: writers read the format from its suffix
        return
    tmp = _new_temporary(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_temporary(target: Path) -> Path:
    """An empty new file beside target, same suffix (writers pick the format from it), created
    with the permissions a plain new file would get."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))
