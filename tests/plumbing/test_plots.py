"""Line plots: real PNG files of the asked size, with the series drawn, log axes, and no display needed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from dsgan_cli.plumbing import plots


def test_line_plot_writes_a_marked_png_of_the_asked_size_atomically(tmp_path):
    out = tmp_path / "sub" / "plot.png"
    xs = [0, 1, 2, 3]
    written = plots.line_plot(
        {"a": (xs, [1, 10, 100, 1000]), "b": (xs, [0, 2, float("nan"), 3])},
        out,
        title="spectrum",
        xlabel="x",
        ylabel="y",
        logy=True,
        size=(400, 300),
        kind="test-kind",
    )
    assert written == out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (400, 300)
        assert im.text.get(plots.MARKER_KEY) == "test-kind"
    assert plots.is_own_plot(out)
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temp file left beside it


def test_the_figure_holds_each_series_with_gaps_for_points_it_cannot_draw():
    """What the plot says, read from the figure (not from matplotlib's pixels): the series, in order and colour,
    non-finite values and y <= 0 on a log axis left out as gaps, a lone point given a marker, the axis scale."""
    xs = [0, 1, 2, 3]
    fig = plots.build_figure(
        {"a": (xs, [1, 10, 100, 1000]), "b": (xs, [0, 2, float("nan"), 3]), "c": (xs, [float("inf"), 5, float("nan"), -1])},
        title="t",
        xlabel="x",
        ylabel="y",
        logy=True,
    )
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "t" and ax.get_xlabel() == "x"
    lines = {ln.get_label(): ln for ln in ax.lines}
    assert list(lines) == ["a", "b", "c"]
    assert list(lines["a"].get_ydata()) == [1, 10, 100, 1000]
    b = np.asarray(lines["b"].get_ydata(), dtype=float)
    assert np.isnan(b[[0, 2]]).all() and list(b[[1, 3]]) == [2, 3], "0 on a log axis and NaN must be gaps"
    c = np.asarray(lines["c"].get_ydata(), dtype=float)
    assert np.isfinite(c).sum() == 1 and lines["c"].get_marker() == "o", "a lone point needs a marker to show"
    assert lines["a"].get_marker() in (None, "None", "")
    colours = [tuple(round(v * 255) for v in ln.get_color()) for ln in ax.lines]
    assert colours == [tuple(c) for c in plots.PALETTE[:3]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]
    linear = plots.build_figure({"a": (xs, [0, 1, 2, 3])}, logy=False)
    assert linear.axes[0].get_yscale() == "linear" and list(linear.axes[0].lines[0].get_ydata()) == [0, 1, 2, 3]


def test_is_own_plot_refuses_other_pngs(tmp_path):
    other = tmp_path / "user.png"
    Image.new("RGB", (8, 8)).save(other)
    (tmp_path / "text.png").write_text("not a png")
    assert not plots.is_own_plot(other) and not plots.is_own_plot(tmp_path / "text.png")
    assert not plots.is_own_plot(tmp_path / "missing.png")


@pytest.mark.slow
def test_plotting_needs_no_display(tmp_path):
    """A display-less environment with an interactive backend configured: plotting still works (no pyplot)."""
    code = (
        "import sys; from dsgan_cli.plumbing import plots; "
        "plots.line_plot({'a': ([0, 1, 2], [3, 1, 2])}, sys.argv[1], size=(320, 240)); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    for backend in (None, "TkAgg"):
        if backend:
            env["MPLBACKEND"] = backend
        out = tmp_path / f"plot-{backend}.png"
        res = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        with Image.open(out) as im:
            assert im.size == (320, 240) and im.format == "PNG"
