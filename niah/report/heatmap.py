"""The heatmap: contexts (rows) x depths (columns), coloured by accuracy, each cell annotated
with its verdict or pass count. Written as PNG, SVG or PDF by the path's suffix (PNG when it
has none)."""

from __future__ import annotations

from pathlib import Path

from ..errors import NiahError
from .tables import cells, num, row_name


def _cell_grid(records: list[dict]):
    """(row keys, depths, accuracy grid with NaN where nothing was scored, annotations)."""
    import numpy as np

    cs = cells(records)
    rows = sorted({(c.context, c.label) for c in cs})
    depths = sorted({c.depth for c in cs})
    grid = np.full((len(rows), len(depths)), np.nan)
    text = [["" for _ in depths] for _ in rows]
    for c in cs:
        i, j = rows.index((c.context, c.label)), depths.index(c.depth)
        if c.n:
            grid[i, j] = c.passed / c.n
            text[i][j] = f"{num(c.passed)}/{c.n}" if c.n > 1 or 0 < c.passed < 1 else c.verdicts[0]
        else:
            text[i][j] = "SKIP"
    return rows, depths, grid, text


def heatmap(records: list[dict], path, *, title: str | None = None) -> None:
    """Draw the heatmap into `path` (not atomic: exports.write_exports makes it so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError:
        raise NiahError("heatmaps need matplotlib: pip install matplotlib") from None

    rows, depths, grid, text = _cell_grid(records)
    cmap = LinearSegmentedColormap.from_list("niah", ["#d7301f", "#fdcc8a", "#1a9850"])
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(depths) + 2), max(2.5, 0.6 * len(rows) + 1.5)))
    try:
        im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(depths)), [f"{d * 100:.4g}%" for d in depths])
        ax.set_yticks(range(len(rows)), [row_name(c, label) for c, label in rows])
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context (tokens)")
        for i in range(len(rows)):
            for j in range(len(depths)):
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, label="accuracy")
        ax.set_title(title or "Needle retrieval")
        fig.tight_layout()
        # the format named by the suffix; never matplotlib's habit of appending ".png"
        fig.savefig(path, dpi=120, format=Path(path).suffix.lower().lstrip(".") or "png")
    finally:
        plt.close(fig)
