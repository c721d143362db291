"""Reading, converting and atomically writing images; finding them in folders.

Every subcommand reads user photos through :func:`load_rgb` so that EXIF
orientation, odd modes (16-bit, palette, CMYK, alpha) and broken files are
handled the same way everywhere.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DsganError, file_error

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

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
    """True when ``path`` has an image file suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


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
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # PIL's own I -> L conversion clips at 255 instead of rescaling.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB"), mode
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        arr = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB"), mode
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB"), mode
    return img.convert("RGB"), mode


def load_rgb(path: str | Path) -> tuple[Image.Image, str | None]:
    """Decode ``path`` as 8-bit RGB with EXIF orientation applied.

    Returns ``(image, converted_from)`` where ``converted_from`` is the
    original PIL mode when a mode conversion happened, else ``None``.
    Raises :class:`ImageReadError` with a short reason for anything that is
    not a readable, sanely sized image.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageReadError(path, e.strerror or str(e)) from None
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(path, f"declared size {w}x{h} is too large (decompression bomb?)")
                im.load()
                img = ImageOps.exif_transpose(im)
                if img is im:
                    img = im.copy()
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
    if img.width < 1 or img.height < 1:
        raise ImageReadError(path, "image has no pixels")
    return _to_8bit_rgb(img)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_uint8(t: torch.Tensor) -> np.ndarray:
    """Float tensor (3, H, W) in [0, 1] -> uint8 array (H, W, 3), rounding to nearest."""
    t = t.detach().float().clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return t.permute(1, 2, 0).cpu().numpy()


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] -> 8-bit RGB PIL image (rounded, not truncated)."""
    return Image.fromarray(tensor_to_uint8(t), "RGB")


def _read_umask() -> int:
    """The process umask (read once: setting it back and forth is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    The temporary name starts with a dot and ends in ``.partial`` so folder
    scans never mistake it for a finished output; a crash leaves only that.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    # mkstemp makes the file 0600; a finished output gets the permissions open() would give it.
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically (temp file + fsync + rename)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def save_image_atomic(img: Image.Image, dest: str | Path, format: str | None = None, **params) -> None:
    """Encode ``img`` in memory and write it to ``dest`` atomically."""
    dest = Path(dest)
    fmt = format or Image.registered_extensions().get(dest.suffix.lower())
    if fmt is None:
        raise DsganError(f"{dest}: unknown image format for suffix {dest.suffix!r}")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    write_bytes_atomic(dest, buf.getvalue())


def check_output_dir(input_dir: str | Path, output_dir: str | Path) -> None:
    """Refuse an output folder that is the input folder or lies inside it."""
    inp = Path(input_dir).resolve()
    out = Path(output_dir).resolve()
    if out == inp:
        raise file_error(output_dir, "output folder is the input folder; choose another one")
    if inp in out.parents:
        raise file_error(output_dir, f"output folder lies inside the input folder {input_dir}; choose one outside it")


def check_writable_dir(path: str | Path) -> None:
    """Create ``path`` if needed and fail clearly when it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error(path, f"cannot create output folder ({e.strerror or e})") from None
    # A real probe instead of os.access: root ignores permission bits, but not
    # read-only mounts, and the probe catches both.
    try:
        fd, probe = tempfile.mkstemp(prefix=".dsgan-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise file_error(path, f"output folder is not writable ({e.strerror or e})") from None
