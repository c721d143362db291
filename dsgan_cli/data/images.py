"""Reading and converting images; finding them in folders (writing goes through :mod:`dsgan_cli.plumbing.writes`).

Every subcommand reads user photos through :func:`load_rgb` (and image
headers through :func:`image_size`) so that EXIF orientation, odd modes
(16-bit, palette, CMYK, alpha) and broken files are handled the same way
everywhere, and writes 8-bit pixels through :func:`to_uint8`.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..plumbing.errors import file_error
from ..plumbing.reads import open_regular

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: Image files that are listed (so a run reports them) but not decoded: animation, newer codecs, vector formats.
UNSUPPORTED_SUFFIXES = {
    ".gif": "GIF",
    ".avif": "AVIF",
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".jxl": "JPEG XL",
    ".svg": "SVG",
    ".eps": "EPS",
    ".psd": "PSD",
}

#: The only Pillow decoders ever tried (JPEG includes multi-picture MPO files from cameras). Whatever a file is
#: named, no other plugin (e.g. EPS through Ghostscript) ever sees it.
DECODERS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")

#: Largest image accepted, in pixels (about 16k x 16k). Larger declared sizes
#: are treated as decompression bombs and rejected before decoding.
MAX_PIXELS = 268_435_456
# Pillow's own bomb threshold (~89 MP) would otherwise reject real 100 MP photos below MAX_PIXELS.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

#: White background for images with transparency: ID photos are shot on a
#: light backdrop, and a black fill would add hard, unrealistic edges.
ALPHA_BACKGROUND = (255, 255, 255)


class ImageReadError(Exception):
    """A file that could not be read as an image; ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def is_image_path(path: Path) -> bool:
    """True when ``path`` has an image file suffix (supported or not: unsupported ones are reported, not ignored)."""
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in UNSUPPORTED_SUFFIXES


def list_images(root: str | Path, all_files: bool = False) -> list[Path]:
    """All image files (or, with ``all_files``, all files) under ``root``, recursive and sorted.

    Symlinked folders are not followed.

    Not following symlinked folders makes symlink loops harmless; symlinked
    files are listed. Raises :class:`DsganError` when ``root`` is missing or
    not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise file_error(root, "no such folder")
    if not root.is_dir():
        raise file_error(root, "not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            p = Path(dirpath) / name
            if not name.startswith(".") and (all_files or is_image_path(p)):
                found.append(p)
    return sorted(found)


def require_images(root: str | Path, what: str = "input") -> list[Path]:
    """Like :func:`list_images` but an empty folder is an error."""
    files = list_images(root)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise file_error(root, f"{what} folder holds no images ({suffixes})")
    return files


def _to_8bit_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Convert any PIL mode to 8-bit RGB; return the image and the original mode if converted."""
    mode = img.mode
    if mode == "RGB":
        return img, None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's own I/F -> L conversion clips at 255 instead of rescaling.
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        if mode == "F":
            top = 1.0 if peak <= 1.0 else peak  # [0, 1] floats as they are; any other range scaled to its peak
        elif mode.startswith("I;16") or 255 < peak <= 65535:
            top = 65535.0
        else:
            top = 255.0 if peak <= 255 else peak  # 32-bit integers beyond 16 bits: scaled to their peak
        arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB"), mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB"), mode
    return img.convert("RGB"), mode


def _open_image_file(path: Path) -> BinaryIO:
    """Open ``path`` for decoding: a supported suffix, a regular file, not empty; :class:`ImageReadError` otherwise."""
    unsupported = UNSUPPORTED_SUFFIXES.get(path.suffix.lower())
    if unsupported:
        raise ImageReadError(path, f"{unsupported} files are not supported; convert to PNG or JPEG")
    try:
        fh = open_regular(path)
    except OSError as e:
        raise ImageReadError(path, e.strerror or str(e)) from None
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise ImageReadError(path, "empty file (0 bytes)")
    return fh


def load_rgb(path: str | Path) -> tuple[Image.Image, str | None]:
    """Decode ``path`` as 8-bit RGB with EXIF orientation applied: the one way every command reads an image.

    Returns ``(image, converted_from)`` where ``converted_from`` is the
    original PIL mode when a mode conversion happened, else ``None``.
    Raises :class:`ImageReadError` with a short reason for anything that is
    not a readable, sanely sized image.
    """
    path = Path(path)
    with _open_image_file(path) as fh:
        return _decode(path, fh)


def image_size(path: str | Path, data: bytes | None = None) -> tuple[int, int]:
    """(W, H) of the image :func:`load_rgb` would return (EXIF rotation applied), from the header only.

    ``data`` is the file's content when the caller read it already (it is
    then not opened again). Raises :class:`ImageReadError` naming ``path``.
    """
    path = Path(path)
    fh = io.BytesIO(data) if data is not None else _open_image_file(path)
    with fh, _reading(path), Image.open(fh, formats=DECODERS) as im:
        w, h = im.size
        rotated = (im.getexif().get(0x0112) or 1) in (5, 6, 7, 8)
    return (h, w) if rotated else (w, h)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn whatever Pillow raises while reading ``path`` into :class:`ImageReadError` with a short reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(path, "declared size is too large (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower():
            reason = "truncated image file"
        raise ImageReadError(path, f"cannot decode image ({reason})") from None


def _decode(path: Path, fh: BinaryIO) -> tuple[Image.Image, str | None]:
    """Decode the open image file ``fh`` (named ``path`` in errors); see :func:`load_rgb`."""
    with _reading(path), Image.open(fh, formats=DECODERS) as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ImageReadError(path, f"declared size {w}x{h} is too large (decompression bomb?)")
        # Pillow opens 16-bit-per-channel RGB (48-bit PNG) as mode "RGB", keeping only the high bytes: only the
        # raw mode before loading tells, and the image counts as converted like any other mode change.
        raw = im.tile[0].args if im.tile else None
        sixteen_bit = isinstance(raw, str) and ";16" in raw and im.mode == "RGB"
        im.load()
        img = ImageOps.exif_transpose(im)
        if img is im:
            img = im.copy()
    if img.width < 1 or img.height < 1:
        raise ImageReadError(path, "image has no pixels")
    if sixteen_bit:
        return img, "RGB;16"
    return _to_8bit_rgb(img)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def to_uint8(t: torch.Tensor) -> torch.Tensor:
    """Float (..., 3, H, W) in [0, 1] -> uint8 (..., H, W, 3) on the same device: the one 8-bit rounding (to nearest)."""
    return t.detach().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8).movedim(-3, -1).contiguous()


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """Float tensor (3, H, W) in [0, 1] -> uint8 array (H, W, 3) on the CPU (:func:`to_uint8`)."""
    return to_uint8(t).cpu().numpy()


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded, not truncated)."""
    return Image.fromarray(tensor_to_uint8(t), "RGB")


def unique_output_names(rels: Iterable[Path], suffix: str) -> tuple[dict[Path, Path], dict[Path, Path]]:
    """Output name per relative input path (``a.jpg`` -> ``a.png``), and the inputs refused because their name is taken.

    Names are compared case-insensitively (``x.PNG`` and ``x.png`` collide, as
    they would on a macOS or Windows disk). In sorted order the first input
    keeps a name; every later one is refused and mapped to that owner, so
    two inputs never share one output and nothing is renamed into a name
    that could collide again. Inputs of a kind that is not decoded (``anim.gif``) come last: they fail anyway,
    so they never take a name a readable image needs.
    """
    names: dict[Path, Path] = {}
    refused: dict[Path, Path] = {}
    owner: dict[str, Path] = {}
    for rel in sorted(rels, key=lambda r: (r.suffix.lower() in UNSUPPORTED_SUFFIXES, r)):
        out = rel.with_suffix(suffix)
        key = out.as_posix().casefold()
        if key in owner:
            refused[rel] = owner[key]
        else:
            owner[key] = rel
            names[rel] = out
    return names, refused


def fit_square(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (antialiased) and centre-crop to a square."""
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_square(path: Path, size: int, resize: bool, what: str) -> tuple[np.ndarray | None, str | None, bool]:
    """Decode one file to a size x size (H, W, 3) uint8 array, the training sets' decode; returns (array, skip
    reason, was_resized). A wrong size is an error naming the file unless ``resize``."""
    try:
        img, _ = load_rgb(path)
    except ImageReadError as e:
        return None, e.reason, False
    if img.size != (size, size):
        if not resize:
            raise file_error(
                path,
                f"{what} image is {img.width}x{img.height}, expected {size}x{size} "
                f"(set data.resize_mismatched = true to resize such images)",
            )
        return np.array(fit_square(img, size), dtype=np.uint8), None, True
    return np.array(img, dtype=np.uint8), None, False
