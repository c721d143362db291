"""Paired degradation metrics: a degraded image Xd against its bicubic input Xb and a known target.

Used where the true degradation is known (``scripts/bench_learning.py``, the demo) and, for the
figures that need no target (colour shift, border ratio), by ``dsgan eval --reference``. The code
is numpy/scipy only and shares no filter with training, so a training bug can't hide in both.
Images are (H, W, 3) arrays in levels 0-255. Every figure is paired pixel by pixel with Xb, so
edge ringing cannot pass for grain and a colour cast cannot pass for noise:

- grain: std of the high-passed residual (X - Xb) in flat regions of Xb;
- colour shift: per-channel mean of lowpass(X) - lowpass(Xb), in levels;
- border ratio: RMS residual in the outer 2 px band / RMS in the interior (1.0 = no border artefact);
- sharpness: Laplacian variance at Xb's strongest edges above the flat-region (noise) floor;
- blockiness: mean |step| across 8-px boundaries / elsewhere, per grid phase (JPEG blocks);
- spectrum distance: residual radial amplitude spectrum vs the target's (Xb itself scores 1.0).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: What "learned" means (docs/demo-and-benchmarks.md, "Learning benchmark"); per-figure thresholds on the held-out set.
TARGETS = {
    "grain_ratio_min": 0.5,
    "sharpness_progress": (0.5, 1.5),
    "colour_shift_max": 1.5,
    "border_ratio_max": 1.2,
    "spectrum_vs_xb_max": 0.7,
}


def luma(x: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an (H, W, 3) float image."""
    return x @ np.array([0.299, 0.587, 0.114])


def gradient(x: np.ndarray) -> np.ndarray:
    """Gradient magnitude of the lightly smoothed luma (levels per pixel)."""
    y = ndimage.gaussian_filter(luma(x), 1.0)
    return np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1)) / 8.0


def interior(shape, band: int) -> np.ndarray:
    """Boolean mask of pixels at least ``band`` pixels away from the border."""
    m = np.zeros(shape[:2], bool)
    m[band:-band, band:-band] = True
    return m


def flat_mask(xb: np.ndarray, threshold: float = 2.0) -> np.ndarray:
    """Low-gradient regions of Xb (eroded, away from the border): where grain shows."""
    return ndimage.binary_erosion(gradient(xb) < threshold, iterations=4) & interior(xb.shape, 4)


def edge_mask(xb: np.ndarray) -> np.ndarray:
    """The strongest 10 % gradients of Xb, away from the border."""
    g = gradient(xb)
    return (g > np.quantile(g, 0.9)) & interior(xb.shape, 4)


def highpass(r: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Residual minus its Gaussian low-pass (per channel): grain without slow colour drifts."""
    return r - ndimage.gaussian_filter(r, sigma=(sigma, sigma, 0), mode="reflect")


def grain(x: np.ndarray, xb: np.ndarray, mask: np.ndarray) -> float:
    """Std of the high-passed residual X - Xb in ``mask``."""
    return float(highpass(x - xb)[mask].std())


def colour_shift(x: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Per-channel mean of lowpass(X) - lowpass(Xb) (levels)."""
    lo = lambda a: ndimage.gaussian_filter(a, sigma=(4, 4, 0), mode="reflect")  # noqa: E731
    return (lo(x) - lo(xb)).reshape(-1, 3).mean(0)


def border_energy(x: np.ndarray, xb: np.ndarray, band: int = 2) -> tuple[float, float]:
    """Mean squared residual (per-channel mean removed) in the outer ``band`` and in the interior."""
    r = x - xb
    r = r - r.reshape(-1, 3).mean(0)
    inner = interior(x.shape, band + 2)
    outer = ~interior(x.shape, band)
    return float((r[outer] ** 2).mean()), float((r[inner] ** 2).mean())


def sharpness(x: np.ndarray, edges: np.ndarray, flat: np.ndarray) -> float:
    """Laplacian variance at edges above the flat-region (noise) floor."""
    lap = ndimage.laplace(luma(x))
    floor = lap[flat].var() if flat.sum() > 100 else 0.0
    return float(lap[edges].var() - floor)


def blockiness(x: np.ndarray) -> np.ndarray:
    """Mean |step| across 8-px boundaries / elsewhere, for each of the 8 grid phases (luma)."""
    y = luma(x)
    dh, dv = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    out = []
    for p in range(8):
        ch = (np.arange(dh.shape[1]) + 1) % 8 == p
        cv = (np.arange(dv.shape[0]) + 1) % 8 == p
        h = dh[:, ch].mean() / max(dh[:, ~ch].mean(), 1e-9)
        v = dv[cv].mean() / max(dv[~cv].mean(), 1e-9)
        out.append((h + v) / 2)
    return np.array(out)


def radial_amplitude(r: np.ndarray, bins: int = 16) -> np.ndarray:
    """Radially averaged amplitude spectrum of a residual (mean over channels)."""
    h, w = r.shape[:2]
    power = (np.abs(np.fft.fft2(r, axes=(0, 1))) ** 2).mean(-1) / (h * w)
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    idx = np.minimum((np.hypot(fy, fx) / 0.5 * bins).astype(int), bins - 1)
    return np.sqrt(np.bincount(idx.ravel(), power.ravel(), bins) / np.maximum(np.bincount(idx.ravel(), None, bins), 1))


def paired_report(xbs, xds, targets, min_flat: int = 200) -> dict:
    """Every paired figure over a held-out set of (Xb, Xd, target) uint8 images, all of one size."""
    f = lambda a: a.astype(np.float64)  # noqa: E731
    g_d, g_t, shifts_d, shifts_t, s_b, s_d, s_t = [], [], [], [], [], [], []
    bo_d = bi_d = bo_t = bi_t = 0.0
    spec_d, spec_t = 0.0, 0.0
    block_d, block_t, block_b = [], [], []
    for xb, xd, t in zip(map(f, xbs), map(f, xds), map(f, targets)):
        flat, edges = flat_mask(xb), edge_mask(xb)
        if flat.sum() >= min_flat:
            g_d.append(grain(xd, xb, flat))
            g_t.append(grain(t, xb, flat))
        shifts_d.append(colour_shift(xd, xb))
        shifts_t.append(colour_shift(t, xb))
        s_b.append(sharpness(xb, edges, flat))
        s_d.append(sharpness(xd, edges, flat))
        s_t.append(sharpness(t, edges, flat))
        o, i = border_energy(xd, xb)
        bo_d, bi_d = bo_d + o, bi_d + i
        o, i = border_energy(t, xb)
        bo_t, bi_t = bo_t + o, bi_t + i
        spec_d = spec_d + radial_amplitude(xd - xb)
        spec_t = spec_t + radial_amplitude(t - xb)
        block_d.append(blockiness(xd))
        block_t.append(blockiness(t))
        block_b.append(blockiness(xb))
    sb, sd, st = map(np.mean, (s_b, s_d, s_t))
    ratio = lambda a, b: float(np.sqrt(a / b)) if b > 0 else float("inf")  # noqa: E731
    spectrum = float(np.abs(spec_d - spec_t).sum() / np.abs(spec_t).sum())
    bd, bt, bb = (np.mean(b, axis=0) for b in (block_d, block_t, block_b))
    return {
        "images": len(xbs),
        "grain_images": len(g_d),
        "grain_xd": float(np.mean(g_d)) if g_d else None,
        "grain_target": float(np.mean(g_t)) if g_t else None,
        "grain_ratio": float(np.mean(g_d) / np.mean(g_t)) if g_t and np.mean(g_t) > 0 else None,
        "colour_shift_xd": np.abs(shifts_d).mean(0).round(3).tolist(),
        "colour_shift_target": np.abs(shifts_t).mean(0).round(3).tolist(),
        "colour_shift_max": float(np.abs(shifts_d).mean(0).max()),
        "border_ratio_xd": ratio(bo_d, bi_d),
        "border_ratio_target": ratio(bo_t, bi_t),
        "sharpness_xb": float(sb),
        "sharpness_xd": float(sd),
        "sharpness_target": float(st),
        "sharpness_progress": float((sb - sd) / (sb - st)) if sb != st else None,
        "blockiness_xb": [float(bb[0]), float(bb.max())],
        "blockiness_xd": [float(bd[0]), float(bd.max())],
        "blockiness_target": [float(bt[0]), float(bt.max())],
        "spectrum_distance_xd": spectrum,
        "spectrum_distance_xb": 1.0,
    }


def verdict(m: dict, grain: bool, sharpness: bool) -> dict[str, bool]:
    """Which targets hold; ``grain`` / ``sharpness`` say whether the degradation has grain / blur."""
    checks = {
        "colour": m["colour_shift_max"] <= TARGETS["colour_shift_max"],
        "border": m["border_ratio_xd"] <= TARGETS["border_ratio_max"],
        "spectrum": m["spectrum_distance_xd"] <= TARGETS["spectrum_vs_xb_max"] * m["spectrum_distance_xb"],
    }
    if grain:
        checks["grain"] = m["grain_ratio"] is not None and m["grain_ratio"] >= TARGETS["grain_ratio_min"]
    if sharpness:
        lo, hi = TARGETS["sharpness_progress"]
        checks["sharpness"] = m["sharpness_progress"] is not None and lo <= m["sharpness_progress"] <= hi
    return checks
