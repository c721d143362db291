"""The degradation family (dsgan_cli.data.family): a reproducible sampler, and each kind doing what it says,
measured on its output with statistics that do not come from the family's own code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsgan_cli.data import family
from dsgan_cli.data.family import Chain, Step, anisotropic_gaussian, sample_family


def flat(value: float = 128.0, size: int = 96) -> np.ndarray:
    return np.full((size, size, 3), value)


def noise_field(seed: int = 0, size: int = 96) -> np.ndarray:
    """Grey 128 plus white noise of 30 levels: a filter's shape shows in its output's correlations."""
    return 128.0 + 30.0 * np.random.default_rng(seed).standard_normal((size, size, 3))


def lag_corr(r: np.ndarray, dy: int, dx: int) -> float:
    """Correlation of a residual (H, W, 3) with itself shifted by (dy, dx) >= 0, pooled over channels."""
    r = r - r.mean(axis=(0, 1))
    h, w = r.shape[:2]
    a, b = r[: h - dy, : w - dx], r[dy:, dx:]
    return float((a * b).mean() / (r * r).mean())


def channel_corr(r: np.ndarray) -> float:
    """Mean off-diagonal correlation of a residual's colour channels."""
    c = np.corrcoef(r.reshape(-1, 3).T)
    return float((c[0, 1] + c[0, 2] + c[1, 2]) / 3)


def test_the_same_seed_draws_the_same_chains_and_pixels():
    a, b, c = sample_family(7, 12), sample_family(7, 12), sample_family(8, 12)
    assert [x.params() for x in a] == [x.params() for x in b]
    assert [x.params() for x in a] != [x.params() for x in c]
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    for x, y in zip(a, b):
        assert np.array_equal(x.degrade(img, np.random.default_rng(3)), y.degrade(img, np.random.default_rng(3)))
    json.dumps([x.params() for x in a])  # written out with the results


def test_the_family_covers_every_stage_and_keeps_sizes():
    chains = sample_family(0, 40)
    kinds = {s.kind for c in chains for s in c.steps}
    assert {"gaussian", "motion", "defocus", "resize", "white", "poisson", "correlated", "camera", "jpeg", "webp"} <= kinds
    assert any(len(c.steps) > 4 for c in chains), "no second-order chain in 40 draws"
    img = np.random.default_rng(0).integers(0, 256, (37, 29, 3)).astype(np.uint8)
    for c in chains:
        out = c.degrade(img, np.random.default_rng(0))
        assert out.shape == img.shape and out.dtype == np.uint8
        assert c.describe().count("->") == len(c.steps) - 1


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_an_anisotropic_kernel_lies_along_its_angle(angle):
    """The kernel's principal axis (second moments of its taps, y up) is at ``angle``; its 2-D spectrum's
    widest axis is across it."""
    k = anisotropic_gaussian(2.0, 0.6, angle)
    r = k.shape[0] // 2
    ys, xs = np.mgrid[-r : r + 1, -r : r + 1]
    x, y = xs, -ys
    m = np.array([[np.sum(k * x * x), np.sum(k * x * y)], [np.sum(k * x * y), np.sum(k * y * y)]])
    vals, vecs = np.linalg.eigh(m)
    found = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1])) % 180
    assert min(abs(found - angle), 180 - abs(found - angle)) < 1.0
    assert vals[1] / vals[0] == pytest.approx((2.0 / 0.6) ** 2, rel=0.1)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(64, 64)))) ** 2
    fy, fx = np.mgrid[-32:32, -32:32]
    fy = -fy
    ms = np.array([[np.sum(spec * fx * fx), np.sum(spec * fx * fy)], [np.sum(spec * fx * fy), np.sum(spec * fy * fy)]])
    _, v = np.linalg.eigh(ms)
    across = np.degrees(np.arctan2(v[1, 1], v[0, 1])) % 180
    assert min(abs(across - (angle + 90) % 180), 180 - abs(across - (angle + 90) % 180)) < 2.0


def test_a_motion_blur_correlates_along_its_direction_only():
    for angle, along, across in ((0.0, (0, 1), (1, 0)), (90.0, (1, 0), (0, 1))):
        out = Step("motion", {"length": 7, "angle": angle}).apply(noise_field(), None)
        assert lag_corr(out, *along) > 0.7 and abs(lag_corr(out, *across)) < 0.1, angle


def test_a_defocus_blur_is_round():
    out = Step("defocus", {"radius": 3, "alias": 0.3}).apply(noise_field(), None)
    h, v = lag_corr(out, 0, 1), lag_corr(out, 1, 0)
    assert h > 0.7 and abs(h - v) < 0.05


@pytest.mark.parametrize("grey", [0.0, 0.5, 0.9])
def test_white_noise_is_white_with_the_asked_channel_correlation(grey):
    r = Step("white", {"sigma": 8.0, "grey": grey}).apply(flat(), np.random.default_rng(0)) - 128
    assert r.std() == pytest.approx(8.0, rel=0.03)
    assert abs(lag_corr(r, 0, 1)) < 0.03 and abs(lag_corr(r, 1, 0)) < 0.03
    assert channel_corr(r) == pytest.approx(grey, abs=0.03)


@pytest.mark.parametrize("spatial", [0.7, 1.4])
def test_correlated_noise_is_correlated_in_space_and_keeps_its_level(spatial):
    r = Step("correlated", {"sigma": 6.0, "spatial": spatial, "grey": 0.6}).apply(flat(size=160), np.random.default_rng(1)) - 128
    # A Gaussian filter of sigma s on white noise: lag-1 correlation exp(-1 / (4 s^2)).
    assert lag_corr(r, 0, 1) == pytest.approx(np.exp(-1 / (4 * spatial**2)), abs=0.06)
    assert r.std() == pytest.approx(6.0, rel=0.1)
    assert channel_corr(r) == pytest.approx(0.6, abs=0.05)


def test_signal_dependent_noise_grows_with_the_signal():
    step = Step("poisson", {"gain": 0.5, "read": 2.0})
    rng = np.random.default_rng(0)
    dark, bright = (step.apply(flat(v), rng) - v for v in (20.0, 220.0))
    assert dark.var() == pytest.approx(0.5 * 20 + 4, rel=0.1)
    assert bright.var() == pytest.approx(0.5 * 220 + 4, rel=0.1)


def test_camera_noise_is_demosaiced_so_correlated_in_space_and_across_colours():
    """Noise on a Bayer mosaic, then demosaicing: neighbours and colours share samples, unlike white sensor noise."""
    step = Step("camera", {"gain": 0.003, "read": 0.004, "demosaic": "bilinear"})
    r = step.apply(flat(100.0, 128), np.random.default_rng(0))
    r = r - r.mean()
    assert r.std() > 2.0
    corr = np.corrcoef(r.reshape(-1, 3).T)
    assert lag_corr(r, 0, 1) > 0.2 and lag_corr(r, 1, 0) > 0.2
    assert np.abs(corr - np.eye(3)).max() > 0.1, f"demosaiced noise came out independent per channel: {corr}"
    white = Step("white", {"sigma": 6.0, "grey": 0.0}).apply(flat(100.0, 128), np.random.default_rng(0)) - 100
    assert abs(lag_corr(white, 0, 1)) < 0.03 and np.abs(np.corrcoef(white.reshape(-1, 3).T) - np.eye(3)).max() < 0.03


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_compression_loses_more_at_lower_quality(kind):
    from skimage import data

    img = np.asarray(data.astronaut()[100:228, 150:278], dtype=np.float64)
    err = [np.abs(Step(kind, {"quality": q}).apply(img, None) - img).mean() for q in (20, 50, 90)]
    assert err[0] > err[1] > err[2] > 0


def test_jpeg_leaves_its_8_pixel_grid():
    from skimage import data

    img = np.asarray(data.astronaut()[100:228, 150:278], dtype=np.float64)

    def grid_ratio(r: np.ndarray, axis: int) -> float:
        """Mean step of the error across 8-px block edges over that inside blocks."""
        jumps = np.abs(np.diff(r, axis=axis)).mean(axis=(0, 2) if axis == 1 else (1, 2))
        return float(jumps[7::8].mean() / np.delete(jumps, np.s_[7::8]).mean())

    r = Step("jpeg", {"quality": 10}).apply(img, None) - img
    assert grid_ratio(r, 0) > 1.4 and grid_ratio(r, 1) > 1.4
    blurred = Step("gaussian", {"sigma_x": 1.0, "sigma_y": 1.0, "angle": 0.0}).apply(img, None) - img
    assert grid_ratio(blurred, 0) < 1.15 and grid_ratio(blurred, 1) < 1.15


def test_a_resample_down_removes_fine_detail():
    out = Step("resize", {"factor": 0.5, "down": "area", "up": "bilinear"}).apply(noise_field(), None)
    assert out.std() < 0.6 * noise_field().std()


def test_chains_apply_steps_in_order():
    """JPEG then noise is not noise then JPEG: the last step decides whether the output lies on JPEG's grid."""
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    a = Chain("a", (Step("white", {"sigma": 5.0, "grey": 0.0}), Step("jpeg", {"quality": 50})))
    b = Chain("b", (Step("jpeg", {"quality": 50}), Step("white", {"sigma": 5.0, "grey": 0.0})))
    assert not np.array_equal(a.degrade(img, np.random.default_rng(0)), b.degrade(img, np.random.default_rng(0)))
    assert "white noise" in a.describe().split("->")[0] and "JPEG" in a.describe().split("->")[1]


def test_a_missing_library_says_what_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("colour_demosaicing"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(family.DsganError, match=r"dsgan-cli\[bench\]"):
        Step("camera", {"gain": 0.001, "read": 0.001, "demosaic": "bilinear"}).apply(flat(), np.random.default_rng(0))
