"""One run per output folder: an exclusive lock held for the whole run by every command that fills a folder.

``train`` locks its run folder, ``prepare``, ``degrade`` and ``pairs`` their output folders, all the same way:
``filelock``'s native lock (``flock``) on a hidden file in the folder, taken through the write gate
(:func:`dsgan_cli.plumbing.writes.file_lock`). The OS drops it when the process dies, so a killed run never
leaves a stale lock; the lock never follows a link at its name, never truncates a file hard-linked there, and
its holder writes its pid (and command) into it, so a refused run can name the run in its way.

A second run into a locked folder does not wait: it stops at once, before it reads or writes anything there,
with ``error: FOLDER: ...`` naming the holder and exit code 2 (:data:`~dsgan_cli.plumbing.errors.EXIT_USAGE`).
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

from filelock import FileLock, Timeout

from . import writes
from .errors import DsganError, file_error

#: The lock of ``prepare``, ``degrade`` and ``pairs`` in their output folders (``train`` keeps its own name).
OUTPUT_LOCK = ".dsgan.lock"

#: This process's folder locks, by folder: kept so that none is released (nor garbage-collected) early.
_held: dict[Path, FileLock] = {}


def lock_holder(path: Path) -> str:
    """What the lock file at ``path`` says about its holder ("pid N (COMMAND)"), or "another process"."""
    try:
        with open(path, "rb") as f:  # read-only; a FIFO at the name was refused before this is reached
            text = f.read(200).decode("utf-8", "replace").strip()
    except OSError:
        return "another process"
    return " ".join(text.split())[:80] or "another process"


def lock_folder(folder: Path, lock_name: str, command: str | None, busy: str, noun: str = "the folder") -> None:
    """Hold an exclusive lock on ``folder`` (which exists) through its file ``lock_name``; refuse at once when
    another process holds it. ``command`` is written into the lock with this process's pid; ``busy`` is the
    reason given when the folder is taken, with ``{holder}`` standing for what the lock names; ``noun`` names the
    folder in other refusals. Reentrant within a process."""
    path = folder / lock_name
    lock = writes.file_lock(
        path, holder=command or True, blocking=False, is_singleton=True, preserve_lock_file=True, fallback_to_soft=False
    )
    try:
        lock.acquire()
    except Timeout:
        raise file_error(folder, busy.format(holder=lock_holder(path))) from None
    except OSError as e:
        planted = e.errno in (errno.ELOOP, errno.EISDIR, errno.EINVAL, errno.EMLINK)  # a link, folder, FIFO, device
        hint = "remove it: the lock file must be a regular file of its own" if planted else "choose another folder"
        raise file_error(path, f"cannot lock {noun} ({e.strerror or e}); {hint}") from None
    _held[folder.resolve()] = lock


def unlock_folder(folder: Path) -> None:
    """Release this process's lock on ``folder``. The lock file stays (removing it would let two later runs lock
    two different files), emptied first: a finished run's pid is no holder to name."""
    lock = _held.pop(folder.resolve(), None)
    if lock is not None:
        with contextlib.suppress(OSError, DsganError):
            writes.truncate(lock.lock_file, 0)  # still held here: no other run writes it meanwhile
        lock.release(force=True)


def lock_output_folder(folder: Path, command: str) -> None:
    """The output-folder lock of ``prepare``, ``degrade`` and ``pairs`` (see the module's docstring)."""
    lock_folder(
        folder,
        OUTPUT_LOCK,
        f"dsgan {command}",
        "another dsgan run is writing into this folder ({holder}); wait for it to finish, or choose another output folder",
    )


__all__ = ["OUTPUT_LOCK", "lock_folder", "lock_output_folder", "unlock_folder"]
