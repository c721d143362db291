"""Known-degradation photo data: scikit-image's photographs, random patches, Xb and the true degradations.

The demo (``dsgan demo``) and the benchmarks (``scripts/bench_learning.py``, ``scripts/bench_sr.py``) build
their data here: clean HR patches cut from photographs that scikit-image ships (nothing is downloaded), Xb made
exactly as ``degrade`` makes it, and "real" LR = a documented degradation of Xb (blur, sensor-like noise, JPEG),
so what G should learn is known. Every random draw comes from the ``rng`` passed in, in a fixed order, so the
same seed gives the same images. scikit-image is the optional ``demo`` extra.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..plumbing import writes
from ..plumbing.errors import DsganError


def _require_skimage():
    """Import ``skimage.data`` or say how to install it."""
    try:
        import skimage.data as skdata
    except ImportError:
        raise DsganError("the demo needs scikit-image for its photographs: pip install 'dsgan-cli[demo]' (make demo does this)") from None
    return skdata


def photo(name: str) -> np.ndarray:
    """One scikit-image photograph as uint8 RGB (H, W, 3); of a stereo pair, the left view."""
    skdata = _require_skimage()
    arr = getattr(skdata, name)()
    if isinstance(arr, tuple):  # stereo pairs: keep the left view
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def shrink(arr: np.ndarray, short_side: int) -> np.ndarray:
    """Lanczos (antialiased) resize so the shorter side is ``short_side``; never enlarges."""
    h, w = arr.shape[:2]
    f = short_side / min(h, w)
    if f >= 1:
        return arr
    img = Image.fromarray(arr).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    return np.asarray(img)


def pyramid(names: Iterable[str], short_sides: Iterable[int]) -> list[np.ndarray]:
    """Each named photograph shrunk to each short side, photo by photo (so patches hold scenes, not blur)."""
    sides = tuple(short_sides)
    return [shrink(arr, s) for arr in map(photo, names) for s in sides]


def split_columns(images: list[np.ndarray], at: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Left (``< at`` of the width) and right parts of each image."""
    cuts = [round(img.shape[1] * at) for img in images]
    return [img[:, :c] for img, c in zip(images, cuts)], [img[:, c:] for img, c in zip(images, cuts)]


def patches(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator, *, flip: bool) -> list[np.ndarray]:
    """``n`` random ``size`` x ``size`` crops taken from ``images`` in turn; with ``flip``, each is mirrored with odds 1/2."""
    images = [img for img in images if min(img.shape[:2]) >= size]
    if not images:
        raise DsganError(f"no source photo region is at least {size} pixels on its short side")
    out = []
    for i in range(n):
        img = images[i % len(images)]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        patch = img[y : y + size, x : x + size]
        if flip and rng.random() < 0.5:
            patch = patch[:, ::-1]
        out.append(np.ascontiguousarray(patch))
    return out


def xb_of(hr: np.ndarray, scale: int) -> np.ndarray:
    """Xb as ``degrade`` makes it: the package's antialiased bicubic downscale of a uint8 image, rounded to uint8."""
    import torch

    from ..method.models import downscale
    from .images import tensor_to_uint8

    t = torch.from_numpy(hr.copy()).permute(2, 0, 1).float().div_(255.0)[None]
    return tensor_to_uint8(downscale(t, scale)[0])


def degrade(lr: np.ndarray, rng: np.random.Generator, *, blur: float = 0.0, noise: float = 0.0, jpeg: int = 0) -> np.ndarray:
    """Gaussian blur (sigma in pixels), Gaussian noise (sigma, 0-255 units), then JPEG (quality) of a uint8 image; 0 skips a stage."""
    x = lr.astype(np.float64)
    if blur:
        from scipy import ndimage

        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0), mode="reflect")
    if noise:
        x = x + rng.normal(0.0, noise, x.shape)
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=jpeg)
        buf.seek(0)
        with Image.open(buf) as im:
            x = np.asarray(im.convert("RGB"))
    return x


def save_pngs(folder: Path, images: list[np.ndarray], prefix: str) -> None:
    """Write uint8 RGB images as lossless ``PREFIX_0000.png``, ... in ``folder``, through the write gate."""
    writes.make_dirs(folder)
    for i, arr in enumerate(images):
        writes.save_image_atomic(Image.fromarray(arr), Path(folder) / f"{prefix}_{i:04d}.png")
