"""Reading, converting and atomically writing images; finding them in folders.

Every subcommand reads user photos through :func:`load_rgb` (and image
headers through :func:`image_size`) so that EXIF orientation, odd modes
(16-bit, palette, CMYK, alpha) and broken files are handled the same way
everywhere, and writes 8-bit pixels through :func:`to_uint8`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DsganError, file_error

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

#: Image files that are listed (so a run reports them) but not decoded: animation, newer codecs, vector formats.
UNSUPPORTED_SUFFIXES = {".gif": "GIF", ".avif": "AVIF", ".heic": "HEIC", ".heif": "HEIF", ".jxl": "JPEG XL",
                        ".svg": "SVG", ".eps": "EPS", ".psd": "PSD"}

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


def _kind(mode: int) -> str:
    """Words for a file type that is not a regular file."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return "a special file"


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading only when it is a regular file; OSError with a reason otherwise.

    ``os.stat`` first, then a non-blocking open re-checked with ``fstat``, so
    a FIFO or device is never read (a FIFO would block forever) and one
    swapped in between the two checks is still refused.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OSError(2, "dangling symlink (its target does not exist)", str(path)) from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise OSError(22, f"not a regular file ({_kind(st.st_mode)})", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(22, f"not a regular file ({_kind(mode)})", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a regular file's content (a weights file, a checkpoint to import)."""
    with open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        im.load()
        img = ImageOps.exif_transpose(im)
        if img is im:
            img = im.copy()
    if img.width < 1 or img.height < 1:
        raise ImageReadError(path, "image has no pixels")
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


def _umask() -> int:
    """The process umask, read from /proc where possible (``os.umask`` must set it to read it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


#: Bytes mkstemp adds to a temp name: "." + NAME + "." + 8 random characters + ".partial".
_PARTIAL_EXTRA = 1 + 1 + 8 + len(".partial")


def partial_prefix(dest: str | Path) -> str:
    """Start of ``dest``'s temp names (``.NAME.``), NAME cut so the whole temp name fits the folder's name limit."""
    dest = Path(dest)
    try:
        limit = os.pathconf(dest.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = os.fsencode(dest.name)[: max(1, limit - _PARTIAL_EXTRA)]
    return f".{os.fsdecode(name)}."


def refuse_special(dest: str | Path) -> None:
    """Raise when ``dest`` exists as anything but a regular file: a symlink, device, FIFO or folder is never replaced."""
    try:
        mode = os.lstat(dest).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a parent may be a file: reported by the writer)
        return
    if not stat.S_ISREG(mode):
        raise file_error(dest, f"exists and is {_kind(mode)}; only new paths or regular files are written")


def _fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it survives a power cut (best effort where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` on success.

    The temporary name starts with a dot and ends in ``.partial`` so folder
    scans never mistake it for a finished output; a crash leaves only that.
    The file gets the mode a plain ``open`` would (0666 less the umask), the
    folder is fsynced after the rename, and a ``dest`` that is not a regular
    file is refused (:func:`refuse_special`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    refuse_special(dest)
    fd, tmp = tempfile.mkstemp(prefix=partial_prefix(dest), suffix=".partial", dir=dest.parent)
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        refuse_special(dest)
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
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
    try:
        _probe_write(path)
    except OSError as e:
        raise file_error(path, f"output folder is not writable ({e.strerror or e})") from None


def _probe_write(folder: Path) -> None:
    """Create and remove a temp file in ``folder``; OSError when that fails.

    A real probe instead of os.access: root ignores permission bits, but not
    read-only mounts, and the probe catches both.
    """
    fd, probe = tempfile.mkstemp(prefix=".dsgan-write-test.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def _real(path: str | Path) -> Path:
    """``path`` with every symlink in it (and in its parents) resolved, whether or not it exists."""
    return Path(os.path.realpath(path))


def check_destinations(dests: Iterable[str | Path], input_dirs: Iterable[str | Path],
                       input_files: Iterable[str | Path] = ()) -> None:
    """Before anything is written, refuse the run when a destination resolves into an input folder or onto
    an input file, exists as a symlink, FIFO, device or folder, or lies in a folder that cannot be written.

    Each destination is resolved with its parents (so a symlinked output subfolder pointing into an input is
    caught). Checking every name up front means a run never stops half-way on one of them.
    """
    roots = [_real(d) for d in input_dirs]
    files = {_real(f) for f in input_files}
    dests = [Path(d) for d in dests]
    bad = []
    for dest in dests:
        real = _real(dest)
        if real in files or any(real == r or r in real.parents for r in roots):
            bad.append(str(dest))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise file_error(bad[0], f"output would land inside an input folder or on an input file{more}; "
                                 "choose an output folder outside the inputs")
    for dest in dests:
        refuse_special(dest)
    for folder in sorted({d.parent for d in dests}):
        if folder.exists() and not folder.is_dir():
            raise file_error(folder, "is not a folder; outputs go inside it")
        if folder.is_dir():
            try:
                _probe_write(folder)
            except OSError as e:
                raise file_error(folder, f"output folder is not writable ({e.strerror or e})") from None


def check_output_file(path: str | Path, what: str = "output") -> None:
    """Before any work: ``path`` must be new or a regular file, and its folder (or nearest existing parent) writable."""
    path = Path(path)
    refuse_special(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise file_error(path, f"cannot write the {what}: {folder} is not a folder")
    try:
        _probe_write(folder)
    except OSError as e:
        raise file_error(path, f"cannot write the {what} ({folder}: {e.strerror or e})") from None


def unique_output_names(rels: Iterable[Path], suffix: str) -> tuple[dict[Path, Path], dict[Path, Path]]:
    """Output name per relative input path (``a.jpg`` -> ``a.png``), and the inputs refused because their name is taken.

    Names are compared case-insensitively (``x.PNG`` and ``x.png`` collide, as
    they would on a macOS or Windows disk). In sorted order the first input
    keeps a name; every later one is refused and mapped to that owner, so
    two inputs never share one output and nothing is renamed into a name
    that could collide again.
    """
    names: dict[Path, Path] = {}
    refused: dict[Path, Path] = {}
    owner: dict[str, Path] = {}
    for rel in sorted(rels):
        out = rel.with_suffix(suffix)
        key = out.as_posix().casefold()
        if key in owner:
            refused[rel] = owner[key]
        else:
            owner[key] = rel
            names[rel] = out
    return names, refused
