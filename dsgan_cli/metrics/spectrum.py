"""Frequency statistics of image sets: radially averaged power spectrum, spectral distance, noise level.

Everything here is plain numpy and needs no pretrained network, so the
frequency report works fully offline. Definitions (also in docs/eval.md):

* **Power spectrum** of one image: luminance ``Y = 0.299 R + 0.587 G + 0.114 B``
  in [0, 1], mean removed, multiplied by a 2-D Hann window (so the image
  borders do not leak power into the high frequencies), then
  ``P = |FFT2(w * (Y - mean))|^2 / sum(w^2)``. With this normalisation white
  noise of variance ``s^2`` has a flat spectrum at ``s^2``.
* **Radial average**: ``P`` averaged over rings of equal spatial frequency
  ``f = sqrt(fx^2 + fy^2)`` in cycles/pixel, ``min(H, W) // 2`` equal-width
  bins from 0 to the Nyquist frequency 0.5 (corners beyond 0.5 are left out).
* **Spectral distance** between two spectra: the mean over frequency bins of
  ``|log10 P_a - log10 P_b|`` (decades; 0 = identical, 0.3 = a factor of two
  on average), optionally only over the bins with ``f >= high_band``.
* **Noise level**: Immerkaer's fast estimate (J. Immerkaer, "Fast noise
  variance estimation", CVIU 64(2), 1996) of the standard deviation of
  additive white Gaussian noise, on the luminance in 0-255 units.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from PIL import Image

#: Luminance weights (ITU-R BT.601).
LUMA = np.array([0.299, 0.587, 0.114])

#: Lower edge of the "high band" in cycles/pixel (upper half of the spectrum).
HIGH_BAND = 0.25

#: Spectra are floored here before taking log10, so a zero bin cannot give -inf.
POWER_FLOOR = 1e-12

_IMMERKAER_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def to_gray(img) -> np.ndarray:
    """PIL image or array (H, W[, 3]; uint8 in 0-255 or float in [0, 1]) -> float64 luminance in [0, 1]."""
    if isinstance(img, Image.Image):
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    arr = arr.astype(np.float64) / scale
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            arr = arr[..., :3] @ LUMA
    if arr.ndim != 2:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {np.shape(img)}")
    return arr


@lru_cache(maxsize=16)
def _radial_bins(h: int, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Bin index of every FFT coefficient (-1 beyond Nyquist), per-bin counts, and the number of bins."""
    n_bins = max(1, min(h, w) // 2)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    idx = np.floor(radius / 0.5 * n_bins).astype(np.int64)
    idx[radius > 0.5] = -1
    idx[idx == n_bins] = n_bins - 1  # f == 0.5 exactly belongs to the last bin
    counts = np.bincount(idx[idx >= 0], minlength=n_bins).astype(np.float64)
    return idx, counts, n_bins


@lru_cache(maxsize=16)
def hann2d(h: int, w: int) -> np.ndarray:
    """Separable 2-D Hann window (periodic form, so it tapers every border to zero)."""
    wy = np.hanning(h + 1)[:-1] if h > 1 else np.ones(1)
    wx = np.hanning(w + 1)[:-1] if w > 1 else np.ones(1)
    return np.outer(wy, wx)


def radial_frequencies(n_bins: int) -> np.ndarray:
    """Centre frequency (cycles/pixel, 0 to 0.5) of each of ``n_bins`` radial bins."""
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def radial_power_spectrum(gray: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of one image (H, W) in [0, 1]; ``min(H, W) // 2`` bins (see module doc)."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2:
        gray = to_gray(gray)
    h, w = gray.shape
    window = hann2d(h, w)
    power = np.abs(np.fft.fft2((gray - gray.mean()) * window)) ** 2 / np.sum(window**2)
    idx, counts, n_bins = _radial_bins(h, w)
    inside = idx >= 0
    sums = np.bincount(idx[inside], weights=power[inside], minlength=n_bins)
    return sums / np.maximum(counts, 1.0)


def estimate_noise(img) -> float:
    """Immerkaer's estimate of the Gaussian noise sigma of an image, on the luminance in 0-255 units."""
    gray = to_gray(img) * 255.0
    h, w = gray.shape
    if h < 3 or w < 3:
        return 0.0
    # 3x3 "difference of two Laplacians" kernel: blind to planes and
    # quadratic shading, so mostly the noise is left.
    k = _IMMERKAER_KERNEL
    conv = sum(k[i, j] * gray[i : h - 2 + i, j : w - 2 + j] for i in range(3) for j in range(3))
    return float(np.sqrt(np.pi / 2.0) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def spectral_distance(spec_a: Sequence[float], spec_b: Sequence[float], high_band: float | None = None) -> float:
    """Mean absolute log10 difference of two spectra (decades); only bins with f >= ``high_band`` if given."""
    a = np.maximum(np.asarray(spec_a, dtype=np.float64), POWER_FLOOR)
    b = np.maximum(np.asarray(spec_b, dtype=np.float64), POWER_FLOOR)
    if a.shape != b.shape:
        raise ValueError(f"spectra have different lengths ({a.shape[0]} vs {b.shape[0]} bins): use one image size")
    diff = np.abs(np.log10(a) - np.log10(b))
    if high_band is not None:
        keep = radial_frequencies(a.shape[0]) >= high_band
        if not keep.any():
            return float("nan")
        diff = diff[keep]
    return float(diff.mean())


def image_stats(arr) -> tuple[np.ndarray, float]:
    """(radial power spectrum, noise sigma) of one image."""
    gray = to_gray(arr)
    return radial_power_spectrum(gray), estimate_noise(gray)


def set_stats(images: Iterable) -> dict:
    """Count, mean spectrum and mean/std noise sigma of a set of same-size images (arrays (H, W[, 3]))."""
    total, noises = None, []
    for img in images:
        spec, noise = image_stats(img)
        total = spec if total is None else total + spec
        noises.append(noise)
    if not noises:
        raise ValueError("empty image set")
    return {"count": len(noises), "spectrum": total / len(noises), "noise": float(np.mean(noises)), "noise_std": float(np.std(noises))}


def summarize(stats: dict[str, dict], reference_name: str) -> dict:
    """Frequency report from per-set stats ({"count", "spectrum", "noise", "noise_std"}): distances to the reference."""
    ref = stats.get(reference_name)
    first = next(iter(stats.values()))
    n_bins = len(first["spectrum"])
    sets = {}
    for name, s in stats.items():
        sets[name] = {
            "count": int(s["count"]),
            "noise": float(s["noise"]),
            "noise_std": float(s["noise_std"]),
            "spectral_distance": spectral_distance(s["spectrum"], ref["spectrum"]) if ref is not None else None,
            "spectral_distance_high": spectral_distance(s["spectrum"], ref["spectrum"], HIGH_BAND) if ref is not None else None,
            "spectrum": [float(v) for v in s["spectrum"]],
        }
    return {
        "reference": reference_name if ref is not None else None,
        "frequencies": [float(f) for f in radial_frequencies(n_bins)],
        "high_band": HIGH_BAND,
        "sets": sets,
        "definitions": {
            "spectrum": "radially averaged power spectrum of the Hann-windowed, mean-removed luminance in [0, 1]; "
            "frequencies in cycles/pixel (0 to 0.5), averaged over the images of a set",
            "spectral_distance": "mean over frequency bins of |log10 P_set - log10 P_reference| (decades)",
            "spectral_distance_high": f"the same over bins with frequency >= {HIGH_BAND} cycles/pixel",
            "noise": "mean over images of Immerkaer's noise sigma estimate, luminance in 0-255 units",
        },
    }
