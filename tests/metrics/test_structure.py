"""The structure diagnostics (dsgan_cli.metrics.structure) tell apart sets that differ only in the shape of their
fine detail: orientation, spatial correlation, colour correlation; and `dsgan eval` reports them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dsgan_cli.data.family import Step
from dsgan_cli.metrics import spectrum, structure


def photo_like(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random scene (low-pass noise), so the detail a step adds is what the high-pass holds."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 215, (size // 8, size // 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)


def degraded_set(step: Step, n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` scenes through ``step``, with white grain added first so a blur has detail to shape."""
    rng = np.random.default_rng(seed)
    grain = Step("white", {"sigma": 12.0, "grey": 0.0})
    return [np.clip(step.apply(grain.apply(photo_like(seed * 100 + i), rng), rng), 0, 255) for i in range(n)]


def aniso(angle: float) -> Step:
    return Step("gaussian", {"sigma_x": 1.8, "sigma_y": 0.5, "angle": angle})


def test_sets_that_differ_only_in_blur_orientation_are_told_apart():
    a, b, a2 = (structure.set_structure(degraded_set(aniso(ang), seed=s)) for ang, s in ((30.0, 0), (120.0, 1), (30.0, 2)))
    da, db = structure.describe(a), structure.describe(b)
    assert da["anisotropy"] > 0.3 and db["anisotropy"] > 0.3
    turn = abs(da["orientation_deg"] - db["orientation_deg"]) % 180
    assert 70 < turn < 110, f"orientations {da['orientation_deg']:.0f} and {db['orientation_deg']:.0f}"
    apart, same = structure.distances(a, b), structure.distances(a, a2)
    assert apart["autocorrelation"] > 4 * same["autocorrelation"] and apart["spectrum_2d"] > 2 * same["spectrum_2d"]
    # The radial spectrum cannot see it: the two sets lie as close as two draws of one set.
    ra, rb, ra2 = (spectrum.set_stats(degraded_set(aniso(ang), seed=s))["spectrum"] for ang, s in ((30.0, 0), (120.0, 1), (30.0, 2)))
    assert spectrum.spectral_distance(ra, rb) < 2 * spectrum.spectral_distance(ra, ra2) + 0.02


def test_sets_that_differ_only_in_spatial_correlation_are_told_apart():
    white = [np.clip(Step("white", {"sigma": 8.0, "grey": 0.0}).apply(photo_like(i), np.random.default_rng(i)), 0, 255) for i in range(8)]
    corr = [
        np.clip(Step("correlated", {"sigma": 8.0, "spatial": 1.0, "grey": 0.0}).apply(photo_like(i), np.random.default_rng(i)), 0, 255)
        for i in range(8)
    ]
    dw, dc = (structure.describe(structure.set_structure(s)) for s in (white, corr))
    # Same scenes, same level: only the grain's correlation differs, and the lag-1 maps part by far more than
    # the scenes' own edges put in both.
    for lag in ("lag1_horizontal", "lag1_vertical"):
        assert dc[lag] - dw[lag] > 0.3, (lag, dw[lag], dc[lag])


def test_sets_that_differ_only_in_colour_correlation_are_told_apart():
    sets = {
        g: [
            np.clip(Step("white", {"sigma": 8.0, "grey": g}).apply(np.full((48, 48, 3), 128.0), np.random.default_rng(i)), 0, 255)
            for i in range(6)
        ]
        for g in (0.0, 0.8)
    }
    d = {g: structure.describe(structure.set_structure(s)) for g, s in sets.items()}
    assert abs(d[0.0]["mean_channel_correlation"]) < 0.05
    assert d[0.8]["mean_channel_correlation"] == pytest.approx(0.8, abs=0.05)
    assert structure.distances(structure.set_structure(sets[0.0]), structure.set_structure(sets[0.8]))["channel_correlation"] > 0.7


def test_white_noise_has_no_lag_correlation_beyond_the_high_pass_own():
    """The box high-pass itself correlates neighbours a little (-1/24 each way for a 5-px box): white noise stays near it."""
    d = structure.describe(structure.set_structure([128 + 10 * np.random.default_rng(i).standard_normal((64, 64, 3)) for i in range(4)]))
    assert abs(d["lag1_horizontal"]) < 0.1 and abs(d["lag1_vertical"]) < 0.1 and d["anisotropy"] < 0.05


def test_mixed_sizes_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        structure.set_structure([np.zeros((16, 16, 3)), np.zeros((16, 20, 3))])


def _write_set(folder, images):
    folder.mkdir()
    for i, arr in enumerate(images):
        Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(folder / f"{i:02d}.png")


@pytest.mark.slow
def test_cli_eval_reports_structure_and_draws_it(tmp_path):
    """`dsgan eval` (a real subprocess) puts the structure of each set and its distance to the real set in the JSON
    report and the plot: a fake set blurred across the real set's orientation lies far from it."""
    _write_set(tmp_path / "fake", degraded_set(aniso(120.0), seed=1))
    _write_set(tmp_path / "real", degraded_set(aniso(30.0), seed=0))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsgan_cli",
            "eval",
            str(tmp_path / "fake"),
            str(tmp_path / "real"),
            "--no-fid",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    sets = report["structure"]["sets"]
    assert sets["real"]["distance"]["autocorrelation"] == 0.0
    assert sets["fake"]["distance"]["autocorrelation"] > 0.05
    assert 70 < abs(sets["fake"]["orientation_deg"] - sets["real"]["orientation_deg"]) % 180 < 110
    assert "Structure of the fine detail" in proc.stdout + proc.stderr
    with Image.open(report["plot"]) as im:
        assert im.height > im.width * 0.9, "the plot holds the spectrum and the 2-D maps below it"
