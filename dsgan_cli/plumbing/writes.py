"""The one gate for every file the tool writes: images, JSON, plots, logs, locks, caches, checkpoints, records.

Every write in the package goes through a function here (``tests/project/test_write_gate.py`` walks the package's
syntax tree and fails on any other), so every destination is checked the same way before the first byte:

- a path that exists as anything but a regular file (a symlink, FIFO, device or folder) is never written
  through, replaced or removed (:func:`refuse_special`);
- a run's destinations are checked up front against its inputs, their kinds and their folders'
  writability (:func:`check_destinations`, :func:`check_output_dir`, :func:`check_writable_dir`);
- files appear atomically (temp + fsync + rename) with the user's umask (:func:`atomic_path`);
- only the tool's own hidden temporaries and folders it made are removed (:func:`remove_own`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from filelock import FileLock
from PIL import Image

from .errors import DsganError, file_error
from .reads import file_kind


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
        raise file_error(dest, f"exists and is {file_kind(mode)}; only new paths or regular files are written")


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
        fd = -1  # closed: a second close could hit another thread's file that reuses the number
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        refuse_special(dest)
        os.replace(tmp_path, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        if fd >= 0:
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


def check_destinations(dests: Iterable[str | Path], input_dirs: Iterable[str | Path], input_files: Iterable[str | Path] = ()) -> None:
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
        raise file_error(
            bad[0], f"output would land inside an input folder or on an input file{more}; choose an output folder outside the inputs"
        )
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


def make_dirs(folder: str | Path) -> Path:
    """Create ``folder`` and its parents; refuse one that exists as anything but a folder. A symlink to a folder
    is a folder here (a cache or output folder linked to another disk is common); only files are never
    written through links."""
    folder = Path(folder)
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(folder).st_mode
        if not stat.S_ISDIR(mode):
            raise file_error(folder, f"exists and is {file_kind(mode)}; a folder was expected")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_append(path: str | Path) -> TextIO:
    """``path`` opened for appending text (a log or journal), never through a symlink or into a special file."""
    path = Path(path)
    make_dirs(path.parent)
    refuse_special(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    return os.fdopen(fd, "a", encoding="utf-8")


def download(url: str, dest: str | Path, hash_prefix: str | None) -> None:
    """Download ``url`` to ``dest`` (torch hub's downloader: a temp file, the hash checked, then renamed)."""
    import sys

    import torch

    dest = Path(dest)
    make_dirs(dest.parent)
    refuse_special(dest)
    torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=sys.stderr.isatty())


def file_lock(path: str | Path, *, holder: bool | str = False, **options) -> FileLock:
    """A ``filelock`` lock at ``path`` (created if needed). filelock opens it without following a link
    (``O_NOFOLLOW``) or truncating it; with ``holder``, the lock's owner writes its pid (and, when ``holder`` is
    text, that text: the command) into it once it holds it. A FIFO or device planted there, or a hard link to
    another file, is refused then, before anything is written."""
    if not holder:
        return FileLock(str(path), **options)
    label = f" ({holder})" if isinstance(holder, str) else ""
    # One callback per label: filelock's singleton locks refuse a second instance with a different callback.
    if label not in _holder_writers:
        _holder_writers[label] = lambda fd: _write_lock_holder(fd, label)
    return FileLock(str(path), on_acquired=_holder_writers[label], **options)


_holder_writers: dict[str, Callable[[int], None]] = {}


def _write_lock_holder(fd: int, label: str = "") -> None:
    """Replace the contents of the locked regular file ``fd`` with this process's pid and ``label``."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    # A hard link planted at the lock's name shares its content with a file elsewhere: writing the pid would
    # destroy that file, so the lock is refused instead.
    if st.st_nlink > 1:
        raise OSError(errno.EMLINK, f"it has {st.st_nlink - 1} other hard link(s), so it is another file too")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}{label}\n".encode(), 0)


def replace(src: str | Path, dest: str | Path) -> None:
    """Rename the tool's own ``src`` onto ``dest`` (a new path, a regular file, or a folder the tool made)."""
    dest = Path(dest)
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(dest).st_mode
        if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise file_error(dest, f"exists and is {file_kind(mode)}; only new paths or regular files are written")
    os.replace(src, dest)


def remove_own(path: str | Path) -> None:
    """Remove a file or folder the tool itself made (a temporary, a partial or pruned checkpoint, its own stale
    output); a symlink is removed as a link, never followed. Missing is fine."""
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def create_mapped(path: str | Path, shape: tuple[int, ...]):
    """A new uint8 array of ``shape`` backed by the file ``path`` (a cache's temporary), for filling in place."""
    import numpy as np

    path = Path(path)
    refuse_special(path)
    return np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)


def truncate(path: str | Path, size: int) -> None:
    """Cut the tool's own file ``path`` to ``size`` bytes."""
    refuse_special(path)
    os.truncate(path, size)


def save_accelerator_state(accelerator, folder: str | Path) -> None:
    """Accelerate's full training state into ``folder`` (a hidden partial folder the tool made for it)."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise file_error(folder, "is not a folder made for the checkpoint")
    accelerator.save_state(str(folder), safe_serialization=True)  # models as safetensors; RNG per rank


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A new private folder in the system's temp space, removed with everything in it afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def silence_stdout() -> None:
    """Point standard output at the null device (its reader went away): later flushes then cannot fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
