"""Structure of the fine detail of image sets: spatial autocorrelation, cross-channel correlation, 2-D spectrum.

Radially averaged spectra and noise levels say how much fine detail a set holds, not its shape: an oriented
blur and its isotropic twin, or white and spatially correlated grain of one level, look the same to them. These
statistics see the shape. All of them are taken on each image's high-pass ``h = x - box5(x)`` (per colour
channel, in 0-255 units; the same split D sees), with its mean removed, and averaged over a set of same-size images:

* **autocorrelation**: ``A(dy, dx) = mean(h_Y(p) h_Y(p + (dy, dx))) / mean(h_Y^2)`` of the luminance high-pass
  for lags up to ``MAX_LAG`` each way (1 at the centre; about 0 elsewhere for white noise, and larger along the
  direction a blur or correlated grain spreads);
* **channel correlation**: the 3 x 3 correlation matrix of ``h``'s colour channels (independent sensor noise: about
  0 off the diagonal; grey grain or edges of grey content: near 1);
* **2-D spectrum**: the power spectrum of the Hann-windowed luminance high-pass, centred (``fftshift``), its
  **anisotropy** ``(l1 - l2) / (l1 + l2)`` and **orientation** (degrees, of the axis along which power extends
  furthest, so the direction *across* an oriented blur's streaks) from the eigenvalues of the power-weighted second
  moments of frequency.

Set against set: the autocorrelation distance is the mean absolute difference of the two maps, the channel
distance that of the three off-diagonal correlations, and the 2-D spectral distance the mean absolute log10
difference over all frequencies (decades), as :mod:`dsgan_cli.metrics.spectrum` does radially.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .spectrum import LUMA, POWER_FLOOR, hann2d

#: Largest lag (pixels, each way) of the autocorrelation map.
MAX_LAG = 3

#: Box size of the low-pass the high-pass is taken against (D's filter).
LOW_PASS = 5


def highpass(img: np.ndarray) -> np.ndarray:
    """``x - box5(x)`` per colour channel of an (H, W, 3) image (uint8 or float in 0-255), mirrored borders,
    each channel's mean removed."""
    from scipy import ndimage

    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    h = x - ndimage.uniform_filter(x, size=(LOW_PASS, LOW_PASS, 1), mode="reflect")
    return h - h.mean(axis=(0, 1), keepdims=True)


def autocorrelation(h: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Normalised autocorrelation map (2 max_lag + 1 square) of the luminance of a high-pass ``h`` (H, W, 3)."""
    y = h @ LUMA
    n, m = y.shape
    energy = max(float(np.mean(y**2)), 1e-12)
    out = np.zeros((2 * max_lag + 1, 2 * max_lag + 1))
    for dy in range(-max_lag, max_lag + 1):
        for dx in range(-max_lag, max_lag + 1):
            a = y[max(0, -dy) : n - max(0, dy), max(0, -dx) : m - max(0, dx)]
            b = y[max(0, dy) : n - max(0, -dy), max(0, dx) : m - max(0, -dx)]
            out[dy + max_lag, dx + max_lag] = float(np.mean(a * b)) / energy if a.size else 0.0
    return out


def channel_correlation(h: np.ndarray) -> np.ndarray:
    """3 x 3 correlation matrix of the colour channels of a high-pass ``h`` (H, W, 3); 0 where a channel is flat."""
    flat = h.reshape(-1, 3)
    cov = flat.T @ flat / max(len(flat), 1)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    return np.nan_to_num(corr, nan=0.0)


def spectrum_2d(h: np.ndarray) -> np.ndarray:
    """Centred 2-D power spectrum of the Hann-windowed luminance of a high-pass ``h`` (H, W, 3)."""
    y = h @ LUMA / 255.0
    window = hann2d(*y.shape)
    power = np.abs(np.fft.fft2((y - y.mean()) * window)) ** 2 / np.sum(window**2)
    return np.fft.fftshift(power)


def orientation(spec: np.ndarray) -> dict[str, float]:
    """Anisotropy (0 isotropic, 1 all power on one line) and orientation (degrees in [0, 180), counter-clockwise
    from the x axis with y up) of a centred 2-D power spectrum, from its power-weighted frequency moments."""
    h, w = spec.shape
    fy = -np.fft.fftshift(np.fft.fftfreq(h))[:, None]  # rows run downwards: flip so angles read as seen
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    p = spec / max(float(spec.sum()), 1e-30)
    m = np.array([[np.sum(p * fx * fx), np.sum(p * fx * fy)], [np.sum(p * fx * fy), np.sum(p * fy * fy)]])
    vals, vecs = np.linalg.eigh(m)
    l2, l1 = max(vals[0], 0.0), max(vals[1], 0.0)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180.0
    return {"anisotropy": float((l1 - l2) / (l1 + l2)) if l1 + l2 > 0 else 0.0, "orientation_deg": float(angle)}


def set_structure(images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Mean autocorrelation map, channel correlation matrix and 2-D spectrum of a set of same-size (H, W, 3) images."""
    count, acc = 0, None
    for img in images:
        h = highpass(img)
        parts = {"autocorrelation": autocorrelation(h), "channel_correlation": channel_correlation(h), "spectrum_2d": spectrum_2d(h)}
        if acc is not None and parts["spectrum_2d"].shape != acc["spectrum_2d"].shape:
            raise ValueError(f"images of different sizes ({parts['spectrum_2d'].shape} vs {acc['spectrum_2d'].shape})")
        acc = parts if acc is None else {k: acc[k] + v for k, v in parts.items()}
        count += 1
    if not count:
        raise ValueError("empty image set")
    return {"count": np.array([count], np.int64), **{k: v / count for k, v in acc.items()}}


def off_diagonal(corr: np.ndarray) -> list[float]:
    """The three correlations R-G, R-B, G-B of a 3 x 3 matrix."""
    return [float(corr[0, 1]), float(corr[0, 2]), float(corr[1, 2])]


def describe(stats: dict[str, np.ndarray]) -> dict:
    """One set's structure as JSON-ready numbers."""
    lag = MAX_LAG
    a = stats["autocorrelation"]
    return {
        "count": int(stats["count"][0]),
        "lag1_horizontal": float(a[lag, lag + 1]),
        "lag1_vertical": float(a[lag + 1, lag]),
        "lag1_diagonal": float(a[lag + 1, lag + 1]),
        "lag1_antidiagonal": float(a[lag + 1, lag - 1]),
        "autocorrelation": [[float(v) for v in r] for r in a],
        "channel_correlation": off_diagonal(stats["channel_correlation"]),
        "mean_channel_correlation": float(np.mean(off_diagonal(stats["channel_correlation"]))),
        **orientation(stats["spectrum_2d"]),
    }


def distances(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """How the structure of set ``a`` differs from set ``b`` (see the module doc)."""
    sa, sb = np.maximum(a["spectrum_2d"], POWER_FLOOR), np.maximum(b["spectrum_2d"], POWER_FLOOR)
    if sa.shape != sb.shape:
        raise ValueError(f"2-D spectra of different sizes ({sa.shape} vs {sb.shape}): use one image size")
    return {
        "autocorrelation": float(np.mean(np.abs(a["autocorrelation"] - b["autocorrelation"]))),
        "channel_correlation": float(
            np.mean(np.abs(np.subtract(off_diagonal(a["channel_correlation"]), off_diagonal(b["channel_correlation"]))))
        ),
        "spectrum_2d": float(np.mean(np.abs(np.log10(sa) - np.log10(sb)))),
    }


def summarize(stats: dict[str, dict[str, np.ndarray]], reference_name: str) -> dict:
    """The structure report: each set described, and its distances to the reference set (the real LR)."""
    ref = stats.get(reference_name)
    return {
        "reference": reference_name if ref is not None else None,
        "max_lag": MAX_LAG,
        "low_pass": LOW_PASS,
        "sets": {name: {**describe(s), "distance": distances(s, ref) if ref is not None else None} for name, s in stats.items()},
        "definitions": {
            "high-pass": f"x - box{LOW_PASS}(x) per colour channel (0-255), mean removed",
            "autocorrelation": "mean over images of the normalised autocorrelation of the luminance high-pass, "
            f"lags -{MAX_LAG}..{MAX_LAG} (rows dy, columns dx)",
            "channel_correlation": "correlation of the colour channels' high-pass: R-G, R-B, G-B",
            "anisotropy": "(l1 - l2) / (l1 + l2) of the power-weighted frequency moments of the 2-D spectrum",
            "orientation_deg": "direction (counter-clockwise from x, y up) along which the spectrum extends furthest",
            "distance": "to the reference set: mean |difference| of autocorrelation maps, of channel correlations, "
            "and mean |log10 ratio| of 2-D spectra (decades)",
        },
    }
