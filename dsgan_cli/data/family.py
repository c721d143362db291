"""A seeded family of realistic degradations: blur of any shape, structured noise, compression, resampling.

What a camera and an image pipeline do to a photo, drawn at random so that a method is judged on degradations
nobody tuned it to (``scripts/bench_sr.py --family N``). Each draw is a chain of steps, in the order a camera
and a pipeline apply them (blur, resample, noise, compression), once (first order) or twice (second order, as
Real-ESRGAN and BSRGAN draw them). Every step is written out in words and parameters, and applies to a uint8
RGB image of any size, keeping its size.

The work is done by well-kept libraries where one does it: Pillow (libjpeg, libwebp) for compression, OpenCV
(through albumentations 2.0's functions) for convolution, motion and defocus kernels and resampling, and
colour-demosaicing for the camera pipeline (Bayer mosaic, sensor noise, demosaicing). Only the anisotropic
Gaussian kernel and the noise fields are written here (a few lines of numpy each). These libraries are the
optional ``bench`` extra: ``pip install 'dsgan-cli[bench]'``.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..plumbing.errors import DsganError

#: Step kinds by stage, in the order a chain applies its stages.
BLURS = ("gaussian", "motion", "defocus")
NOISES = ("white", "poisson", "correlated", "camera")
CODECS = ("jpeg", "webp")


def _require(module: str):
    """Import one of the ``bench`` extra's libraries or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DsganError(f"the degradation family needs {module.split('.')[0]}: pip install 'dsgan-cli[bench]'") from None


# ----------------------------------------------------------------------------- kernels


def anisotropic_gaussian(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A normalised 2-D Gaussian kernel with standard deviations ``sigma_x`` along ``angle`` (degrees,
    counter-clockwise from the x axis, y pointing up) and ``sigma_y`` across it; odd size spanning 3 sigma."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, -ax)  # rows run downwards: flip y so the angle is counter-clockwise as seen
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A centred straight-line motion blur of ``length`` pixels (odd) at ``angle`` degrees (albumentations)."""
    blur = _require("albumentations.augmentations.blur.functional")
    k = blur.create_motion_kernel(length, angle, 0.0, False, random.Random(0)).astype(np.float64)
    return k / k.sum()


def convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``x`` (H, W, 3 float) filtered by a 2-D ``kernel`` per channel (OpenCV, mirrored borders)."""
    cv2 = _require("cv2")
    # filter2D correlates; flip the kernel so that an asymmetric one convolves.
    return cv2.filter2D(
        x.astype(np.float32), -1, np.ascontiguousarray(kernel[::-1, ::-1]).astype(np.float32), borderType=cv2.BORDER_REFLECT_101
    ).astype(np.float64)


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """One degradation step: its kind and parameters; ``apply`` maps float RGB (0-255, H x W x 3) to the same."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The step in words, with its parameters."""
        p = self.params
        text = {
            "gaussian": lambda: f"Gaussian blur sigma {p['sigma_x']:.2f} x {p['sigma_y']:.2f} at {p['angle']:.0f} deg",
            "motion": lambda: f"motion blur {p['length']} px at {p['angle']:.0f} deg",
            "defocus": lambda: f"defocus blur radius {p['radius']} (alias {p['alias']:.2f})",
            "resize": lambda: f"resample x{p['factor']:.2f} ({p['down']}) and back ({p['up']})",
            "white": lambda: f"white noise sigma {p['sigma']:.1f}/255, grey share {p['grey']:.2f}",
            "poisson": lambda: f"signal-dependent noise var {p['gain']:.2f} x signal + {p['read']:.1f}^2",
            "correlated": lambda: (
                f"correlated noise sigma {p['sigma']:.1f}/255, spatial sigma {p['spatial']:.2f} px, grey share {p['grey']:.2f}"
            ),
            "camera": lambda: f"camera: Bayer RGGB, shot gain {p['gain']:.4f}, read {p['read']:.4f} (linear), {p['demosaic']} demosaicing",
            "jpeg": lambda: f"JPEG q{p['quality']}",
            "webp": lambda: f"WebP q{p['quality']}",
        }[self.kind]
        return text()

    def apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The step applied to ``x``; noise is drawn from ``rng``."""
        return getattr(self, f"_{self.kind}")(x, rng)

    # Blur ---------------------------------------------------------------
    def _gaussian(self, x, rng):
        p = self.params
        return convolve(x, anisotropic_gaussian(p["sigma_x"], p["sigma_y"], p["angle"]))

    def _motion(self, x, rng):
        return convolve(x, motion_kernel(self.params["length"], self.params["angle"]))

    def _defocus(self, x, rng):
        blur = _require("albumentations.augmentations.blur.functional")
        # albumentations takes float images in [0, 1] (and clips to it, as an 8-bit pipeline would).
        out = blur.defocus((np.clip(x, 0, 255) / 255.0).astype(np.float32), self.params["radius"], self.params["alias"])
        return out.astype(np.float64) * 255.0

    # Resampling ---------------------------------------------------------
    def _resize(self, x, rng):
        cv2 = _require("cv2")
        interp = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
        h, w = x.shape[:2]
        f = self.params["factor"]
        small = cv2.resize(x.astype(np.float32), (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp[self.params["down"]])
        return cv2.resize(small, (w, h), interpolation=interp[self.params["up"]]).astype(np.float64)

    # Noise --------------------------------------------------------------
    def _white(self, x, rng):
        return x + self.params["sigma"] * grey_mix(rng, x.shape, self.params["grey"])

    def _poisson(self, x, rng):
        p = self.params
        std = np.sqrt(p["gain"] * np.clip(x, 0, 255) + p["read"] ** 2)
        return x + std * rng.standard_normal(x.shape)

    def _correlated(self, x, rng):
        p = self.params
        k = anisotropic_gaussian(p["spatial"], p["spatial"], 0.0)
        # A linear filter keeps the channel correlation; dividing by the kernel's norm keeps the variance 1.
        return x + p["sigma"] * convolve(grey_mix(rng, x.shape, p["grey"]), k / np.sqrt((k**2).sum()))

    def _camera(self, x, rng):
        cd = _require("colour_demosaicing")
        p = self.params
        lin = (np.clip(x, 0, 255) / 255.0) ** 2.2  # display -> linear light, where sensor noise lives
        cfa = cd.mosaicing_CFA_Bayer(lin, "RGGB")
        cfa = cfa + np.sqrt(p["gain"] * np.clip(cfa, 0, None) + p["read"] ** 2) * rng.standard_normal(cfa.shape)
        demosaic = {
            "bilinear": cd.demosaicing_CFA_Bayer_bilinear,
            "Malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
            "Menon2007": cd.demosaicing_CFA_Bayer_Menon2007,
        }[p["demosaic"]]
        rgb = np.asarray(demosaic(cfa, "RGGB"), dtype=np.float64)
        return 255.0 * np.clip(rgb, 0, 1) ** (1 / 2.2)

    # Compression --------------------------------------------------------
    def _jpeg(self, x, rng):
        return _codec(x, "JPEG", self.params["quality"])

    def _webp(self, x, rng):
        return _codec(x, "WEBP", self.params["quality"])


def grey_mix(rng: np.random.Generator, shape: tuple[int, ...], grey: float) -> np.ndarray:
    """Unit-variance Gaussian noise of ``shape`` (H, W, 3) whose channels correlate by ``grey`` (0 independent,
    1 the same in every channel), as colour noise after demosaicing and chroma denoising comes out in part grey."""
    own = rng.standard_normal(shape)
    common = rng.standard_normal((*shape[:2], 1))
    return math.sqrt(1 - grey) * own + math.sqrt(grey) * common


def _codec(x: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    """``x`` rounded to 8 bits, encoded in ``fmt`` at ``quality`` by Pillow and decoded."""
    img = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


# ----------------------------------------------------------------------------- chains and the sampler


@dataclass(frozen=True)
class Chain:
    """A drawn degradation: steps applied in order to a clean uint8 LR image (``degrade``), rounded at the end."""

    name: str
    steps: tuple[Step, ...]

    def degrade(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The chain applied to a uint8 RGB image; noise from ``rng``; uint8 out, same size."""
        x = lr.astype(np.float64)
        for step in self.steps:
            x = step.apply(x, rng)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def describe(self) -> str:
        """Every step in words, in order."""
        return " -> ".join(s.describe() for s in self.steps)

    def params(self) -> list[dict[str, Any]]:
        """Every step as ``{"kind": ..., **parameters}``, in order (JSON-ready)."""
        return [{"kind": s.kind, **s.params} for s in self.steps]


def _odd(n: float) -> int:
    """The nearest odd integer >= 3."""
    return max(3, int(round(n)) // 2 * 2 + 1)


def draw_blur(rng: np.random.Generator, strength: float) -> Step:
    """One blur of a random shape; ``strength`` (0-1] scales its size (the second order draws milder ones)."""
    kind = BLURS[int(rng.integers(len(BLURS)))]
    if kind == "gaussian":
        a, b = rng.uniform(0.4, 0.4 + 1.6 * strength, size=2)
        if rng.random() < 0.4:
            b = a  # isotropic
        return Step(
            "gaussian", {"sigma_x": round(float(a), 3), "sigma_y": round(float(b), 3), "angle": round(float(rng.uniform(0, 180)), 1)}
        )
    if kind == "motion":
        return Step("motion", {"length": _odd(rng.uniform(3, 3 + 4 * strength)), "angle": round(float(rng.uniform(0, 180)), 1)})
    return Step(
        "defocus", {"radius": int(rng.integers(1, 1 + max(1, round(3 * strength)) + 1)), "alias": round(float(rng.uniform(0.1, 0.5)), 3)}
    )


def draw_resize(rng: np.random.Generator) -> Step:
    """A resample down (or up) and back to the same size, with random interpolations."""
    factor = float(rng.uniform(0.5, 0.9) if rng.random() < 0.7 else rng.uniform(1.1, 1.5))
    methods = ("area", "bilinear", "bicubic", "nearest")
    return Step(
        "resize",
        {"factor": round(factor, 3), "down": methods[int(rng.integers(3 if factor < 1 else 4))], "up": methods[1 + int(rng.integers(2))]},
    )


def draw_noise(rng: np.random.Generator, strength: float) -> Step:
    """One noise of a random structure; ``strength`` scales its level."""
    kind = NOISES[int(rng.integers(len(NOISES)))]
    grey = round(float(rng.uniform(0, 1) if rng.random() < 0.5 else 0.0), 3)
    if kind == "white":
        return Step("white", {"sigma": round(float(rng.uniform(2, 2 + 12 * strength)), 2), "grey": grey})
    if kind == "poisson":
        return Step(
            "poisson", {"gain": round(float(rng.uniform(0.05, 0.05 + 0.75 * strength)), 3), "read": round(float(rng.uniform(0.5, 4)), 2)}
        )
    if kind == "correlated":
        return Step(
            "correlated",
            {"sigma": round(float(rng.uniform(2, 2 + 10 * strength)), 2), "spatial": round(float(rng.uniform(0.5, 1.5)), 3), "grey": grey},
        )
    return Step(
        "camera",
        {
            "gain": round(float(rng.uniform(0.0005, 0.0005 + 0.004 * strength)), 5),
            "read": round(float(rng.uniform(0.001, 0.006)), 5),
            "demosaic": ("bilinear", "Malvar2004", "Menon2007")[int(rng.integers(3))],
        },
    )


def draw_codec(rng: np.random.Generator, strength: float) -> Step:
    """JPEG or WebP at a random quality (lower with ``strength``)."""
    kind = CODECS[int(rng.integers(len(CODECS)))] if rng.random() < 0.5 else "jpeg"
    return Step(kind, {"quality": int(rng.integers(round(95 - 65 * strength), 96))})


def draw_pass(rng: np.random.Generator, strength: float) -> list[Step]:
    """One order of degradation: blur, resample, noise, compression, each with its odds; never empty."""
    steps: list[Step] = []
    if rng.random() < 0.7:
        steps.append(draw_blur(rng, strength))
    if rng.random() < 0.3:
        steps.append(draw_resize(rng))
    if rng.random() < 0.8:
        steps.append(draw_noise(rng, strength))
    if rng.random() < 0.7 or not steps:
        steps.append(draw_codec(rng, strength))
    return steps


def draw_chain(rng: np.random.Generator, name: str) -> Chain:
    """A first-order chain, or with odds 0.3 a second order: a milder second pass after the first."""
    steps = draw_pass(rng, 1.0)
    if rng.random() < 0.3:
        steps += draw_pass(rng, 0.5)
    return Chain(name, tuple(steps))


def sample_family(seed: int, n: int) -> list[Chain]:
    """``n`` degradations drawn from ``seed``: the same seed gives the same chains (and, with the same
    ``rng`` given to ``degrade``, the same pixels)."""
    rng = np.random.default_rng(seed)
    return [draw_chain(rng, f"draw{i:02d}") for i in range(n)]
