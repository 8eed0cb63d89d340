"""The heatmap: contexts (rows) x depths (columns), coloured by accuracy, each cell annotated
with its verdict or pass count; rows past the model's trained length are hatched, marked in
their label and set off by a dashed line. Written as PNG, SVG or PDF by the path's suffix (PNG
when it has none)."""

from __future__ import annotations

from pathlib import Path

from ..errors import NiahError
from .tables import BEYOND_MARK, cells, num, row_name


def _cell_grid(records: list[dict]):
    """(row keys, depths, accuracy grid with NaN where nothing was scored, annotations, the
    row keys past the trained length)."""
    import numpy as np

    cs = cells(records)
    rows = sorted({(c.context, c.label) for c in cs})
    depths = sorted({c.depth for c in cs})
    grid = np.full((len(rows), len(depths)), np.nan)
    text = [["" for _ in depths] for _ in rows]
    beyond = {(c.context, c.label) for c in cs if c.beyond}
    for c in cs:
        i, j = rows.index((c.context, c.label)), depths.index(c.depth)
        if c.n:
            grid[i, j] = c.passed / c.n
            text[i][j] = f"{num(c.passed)}/{c.n}" if c.n > 1 or 0 < c.passed < 1 else c.verdicts[0]
        else:
            text[i][j] = "SKIP"
    return rows, depths, grid, text, beyond


def _mark_beyond(fig, ax, rows: list, beyond: set, n_depths: int) -> bool:
    """Hatch the rows past the trained length, draw a dashed line where they start, and say
    so in a legend at the foot of the figure; whether any row was marked."""
    from matplotlib.patches import Patch, Rectangle

    marked = [i for i, key in enumerate(rows) if key in beyond]
    if not marked:
        return False
    for i in marked:
        ax.add_patch(
            Rectangle(
                (-0.5, i - 0.5),
                n_depths,
                1,
                fill=False,
                hatch="//",
                edgecolor="#444444",
                linewidth=0,
            )
        )
    ax.axhline(min(marked) - 0.5, color="black", linestyle="--", linewidth=1.2)
    fig.legend(
        handles=[
            Patch(
                facecolor="white",
                edgecolor="#444444",
                hatch="//",
                label=f"{BEYOND_MARK} past the trained length (below the dashed line)",
            )
        ],
        loc="lower center",
        fontsize=8,
        frameon=False,
    )
    return True


def heatmap(records: list[dict], path, *, title: str | None = None) -> None:
    """Draw the heatmap into `path` (not atomic: exports.write_exports makes it so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError:
        raise NiahError("heatmaps need matplotlib: pip install matplotlib") from None

    rows, depths, grid, text, beyond = _cell_grid(records)
    cmap = LinearSegmentedColormap.from_list("niah", ["#d7301f", "#fdcc8a", "#1a9850"])
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(depths) + 2), max(2.5, 0.6 * len(rows) + 1.5)))
    try:
        im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(depths)), [f"{d * 100:.4g}%" for d in depths])
        ax.set_yticks(
            range(len(rows)), [row_name(c, label, beyond=(c, label) in beyond) for c, label in rows]
        )
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context (tokens)")
        for i in range(len(rows)):
            for j in range(len(depths)):
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
        marked = _mark_beyond(fig, ax, rows, beyond, len(depths))
        fig.colorbar(im, ax=ax, label="accuracy")
        ax.set_title(title or "Needle retrieval")
        fig.tight_layout(rect=(0, 0.08, 1, 1) if marked else None)
        # the format named by the suffix; never matplotlib's habit of appending ".png"
        fig.savefig(path, dpi=120, format=Path(path).suffix.lower().lstrip(".") or "png")
    finally:
        plt.close(fig)
