"""Line plots: real PNG files of the asked size, with the series drawn, log axes, and no display needed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

from conftest import REPO
from dsgan_cli import plots


def _pixels_of(arr: np.ndarray, colour) -> np.ndarray:
    """Mask of the pixels within a small distance of ``colour``."""
    return np.abs(arr.astype(int) - np.array(colour)).sum(axis=2) < 30


def _straightness(mask: np.ndarray) -> float:
    """Largest distance (in pixels) of a drawn curve's column centres from the straight line through its ends.

    The curve is the largest connected patch of its colour (the legend swatch is a smaller one).
    """
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    curve = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, n + 1))))
    cols = np.flatnonzero(curve.any(axis=0))
    rows = np.array([np.flatnonzero(curve[:, c]).mean() for c in cols])
    line = np.interp(cols, [cols[0], cols[-1]], [rows[0], rows[-1]])
    return float(np.abs(rows - line).max())


def _plot(tmp_path, logy: bool, name: str) -> np.ndarray:
    """One decade per step, for x 0..3 (a straight line on a log axis only); returns the image's pixels."""
    out = tmp_path / name
    xs = [0, 1, 2, 3]
    plots.line_plot({"decades": (xs, [1, 10, 100, 1000])}, out, title="t", xlabel="x", ylabel="y", logy=logy,
                    size=(500, 400))
    with Image.open(out) as im:
        return np.asarray(im.convert("RGB"))


def test_line_plot_writes_a_marked_png_of_the_asked_size_atomically(tmp_path):
    out = tmp_path / "sub" / "plot.png"
    xs = [0, 1, 2, 3]
    written = plots.line_plot({"a": (xs, [1, 10, 100, 1000]), "b": (xs, [0, 2, float("nan"), 3])}, out,
                              title="spectrum", xlabel="x", ylabel="y", logy=True, size=(400, 300), kind="test-kind")
    assert written == out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (400, 300)
        assert im.text.get(plots.MARKER_KEY) == "test-kind"
        arr = np.asarray(im.convert("RGB"))
    assert plots.is_own_plot(out)
    assert [p.name for p in out.parent.iterdir()] == ["plot.png"]  # no temp file left beside it
    # Both series are drawn in their own colours (line and legend), on a mostly white canvas with dark text.
    for colour in plots.PALETTE[:2]:
        assert _pixels_of(arr, colour).sum() > 20, colour
    assert (arr.min(axis=2) > 240).mean() > 0.5
    assert (arr.max(axis=2) < 60).sum() > 200


def test_log_axis_draws_decades_evenly(tmp_path):
    colour = plots.PALETTE[0]
    log = _pixels_of(_plot(tmp_path, True, "log.png"), colour)
    linear = _pixels_of(_plot(tmp_path, False, "linear.png"), colour)
    # 1, 10, 100, 1000 is a straight line on a log axis, a hockey stick on a linear one.
    assert _straightness(log) < 5 < 0.2 * _straightness(linear)


def test_is_own_plot_refuses_other_pngs(tmp_path):
    other = tmp_path / "user.png"
    Image.new("RGB", (8, 8)).save(other)
    (tmp_path / "text.png").write_text("not a png")
    assert not plots.is_own_plot(other) and not plots.is_own_plot(tmp_path / "text.png")
    assert not plots.is_own_plot(tmp_path / "missing.png")


def test_plotting_needs_no_display(tmp_path):
    """A display-less environment with an interactive backend configured: plotting still works (no pyplot)."""
    code = ("import sys; from dsgan_cli import plots; "
            "plots.line_plot({'a': ([0, 1, 2], [3, 1, 2])}, sys.argv[1], size=(320, 240)); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    for backend in (None, "TkAgg"):
        if backend:
            env["MPLBACKEND"] = backend
        out = tmp_path / f"plot-{backend}.png"
        res = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        with Image.open(out) as im:
            assert im.size == (320, 240) and im.format == "PNG"
