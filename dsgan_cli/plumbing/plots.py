"""Line plots (loss curves, power spectra) drawn with matplotlib's Agg backend, written atomically as PNG."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

#: Line colours (colour-blind friendly "Okabe-Ito" palette), used in order.
PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (0, 0, 0), (240, 228, 66)]

#: PNG text chunk written into every plot, so a later run can tell its own old plot from a user's file.
MARKER_KEY = "dsgan-cli"

#: Figure resolution; a plot of ``size`` (W, H) pixels is W/DPI x H/DPI inches.
DPI = 100


def _points(xs: Sequence[float], ys: Sequence[float], logy: bool) -> tuple[list[float], list[float]]:
    """The series as floats; non-finite values (and y <= 0 on a log axis) become NaN, which breaks the line."""
    px, py = [], []
    for x, y in zip(xs, ys):
        x, y = float(x), float(y)
        bad = not (math.isfinite(x) and math.isfinite(y)) or (logy and y <= 0)
        px.append(math.nan if bad else x)
        py.append(math.nan if bad else y)
    return px, py


def build_figure(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    size: tuple[int, int] = (800, 500),
):
    """A matplotlib Figure of ``series`` ({label: (xs, ys)}) as lines with grid, labels and a legend."""
    from matplotlib.figure import Figure  # a bare Figure draws on Agg: no display, no global pyplot state

    width, height = size
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    colours = [tuple(c / 255 for c in rgb) for rgb in PALETTE]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        px, py = _points(xs, ys, logy)
        # A lone point between gaps would not show as a line: give every point a small marker then.
        ax.plot(
            px,
            py,
            color=colours[i % len(colours)],
            linewidth=2,
            label=name,
            marker="o" if sum(math.isfinite(v) for v in py) == 1 else None,
            markersize=4,
        )
    if logy and any(ax.lines):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", color="0.88")
    if series:
        ax.legend(loc="best", framealpha=0.9)
    return fig


def render_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    size: tuple[int, int] = (800, 500),
    kind: str = "plot",
) -> bytes:
    """PNG bytes of :func:`build_figure`'s plot, ``size`` pixels, marked with ``kind``."""
    fig = build_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy, size=size)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={MARKER_KEY: kind})
    return buf.getvalue()


def is_own_plot(path: str | Path) -> bool:
    """True when ``path`` is a PNG this package wrote (it carries the ``dsgan-cli`` text chunk)."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and MARKER_KEY in getattr(im, "text", {})
    except (OSError, ValueError):
        return False


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    size: tuple[int, int] = (800, 500),
    kind: str = "plot",
) -> Path:
    """Draw ``series`` ({label: (xs, ys)}) and write it to ``path`` as PNG atomically; returns the path.

    ``logy`` draws y on a log axis (points with y <= 0 are left out): power
    spectra and losses span decades. ``kind`` is stored in the PNG's
    ``dsgan-cli`` text chunk.
    """
    from .writes import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, render_png(series, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy, size=size, kind=kind))
    return path


def lines_and_maps_png(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    maps: dict[str, list[tuple[str, object]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    kind: str = "plot",
) -> bytes:
    """PNG bytes of a line plot (as :func:`build_figure`) over rows of image maps: ``maps`` is {row label: [(panel
    title, 2-D array), ...]}, each row's panels on one colour scale (its bar on the right), so sets compare at a glance."""
    import numpy as np
    from matplotlib.figure import Figure

    cols = max([len(r) for r in maps.values()] + [1])
    fig = Figure(figsize=(max(8.0, 2.6 * cols), 4.5 + 2.6 * len(maps)), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(1 + len(maps), cols, height_ratios=[4.5] + [2.6] * len(maps))
    ax = fig.add_subplot(grid[0, :])
    colours = [tuple(c / 255 for c in rgb) for rgb in PALETTE]
    for i, (name, (xs, ys)) in enumerate(series.items()):
        px, py = _points(xs, ys, logy)
        ax.plot(px, py, color=colours[i % len(colours)], linewidth=2, label=name)
    if logy and any(ax.lines):
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="major", color="0.88")
    if series:
        ax.legend(loc="best", framealpha=0.9)
    for row, (label, panels) in enumerate(maps.items(), start=1):
        values = np.concatenate([np.asarray(a, dtype=float).ravel() for _, a in panels] or [np.zeros(1)])
        values = values[np.isfinite(values)]
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        image = None
        for col, (name, arr) in enumerate(panels):
            pax = fig.add_subplot(grid[row, col])
            image = pax.imshow(arr, vmin=lo, vmax=hi, cmap="magma", interpolation="nearest")
            pax.set_title(f"{label}: {name}", fontsize=9)
            pax.set_xticks([])
            pax.set_yticks([])
        if image is not None:
            fig.colorbar(image, ax=fig.axes[-len(panels) :], shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={MARKER_KEY: kind})
    return buf.getvalue()
