"""Reading files safely: only regular files are opened (never a FIFO, which would block, or a device), and a file's
kind is put in words for the errors that name it. The counterpart of :mod:`dsgan_cli.plumbing.writes`; images are
decoded by :mod:`dsgan_cli.data.images` on top of it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO


def file_kind(mode: int) -> str:
    """Words for a file type (a regular file too: a folder was expected there)."""
    for test, words in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
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
        raise OSError(22, f"not a regular file ({file_kind(st.st_mode)})", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(22, f"not a regular file ({file_kind(mode)})", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a regular file's content (a weights file, a checkpoint to import, a cache's pixels)."""
    with open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
