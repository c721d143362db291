"""One output-folder job: what ``degrade`` and ``pairs`` (and, for its lock and stale crops, ``prepare``) do to the
folder they fill, so that the folder's record always says what made the files in it.

1. **Plan.** Every input gets its output names (:func:`plan_outputs`); two inputs never share one (compared
   without case), and an input the tool cannot read by its suffix (``anim.gif``) claims no name.
2. **Lock.** The folder is locked for the whole run (:mod:`dsgan_cli.plumbing.folder_lock`, the lock ``train``
   uses): a second run into it stops at once, exit 2, naming the holder. Only then is the folder's record read.
3. **Write.** The record names the generator and settings; it lists the ``outputs`` the tool wrote (relative
   paths). A run that replaces outputs made otherwise marks the record ``replacing_earlier_outputs``.
4. **Record.** At the end (or when the run stops) the record lists what is the tool's own: the outputs it listed
   before that still stand, plus what this run wrote (a file counts as written when its inode or mtime changed).
   Recorded outputs whose input is gone, or now has no output, are removed; so are a replacing run's earlier
   outputs of inputs it failed on. The "replacing" mark goes only when every planned output was rewritten.

Only regular files the record lists, inside the folder, are ever removed: a user's file is never touched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import UNSUPPORTED_SUFFIXES, require_images
from ..plumbing import writes
from ..plumbing.folder_lock import lock_output_folder, unlock_folder
from ..plumbing.output_record import OUTPUTS, check_output_record, read_output_record, recorded_outputs, write_output_record


def is_main_process() -> bool:
    """Whether this is the main process of an ``accelerate launch`` (or the only process). Read from the launcher's
    environment, so it is known before any process group exists."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


# --------------------------------------------------------------------------- planning


@dataclass
class Planned:
    """One input and the output names it gets (relative to the output folder)."""

    src: Path
    rel: Path  # relative to the input folder
    outputs: tuple[str, ...]


def safe_name(name: str) -> str:
    """``name`` with whitespace and control characters (newlines, tabs, format marks) replaced by ``_``: line-based
    lists such as BasicSR's ``meta_info.txt`` read a name up to its first space and a record per line."""
    return "".join("_" if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Zs") else ch for ch in name)


def plan_outputs(
    input_dir: Path, name_of: Callable[[Path], str], outputs_of: Callable[[str], tuple[str, ...]]
) -> tuple[list[Planned], list[tuple[str, str]]]:
    """Every image under ``input_dir`` with its output name (``name_of(relative path)``) and output files
    (``outputs_of(name)``), and the ``(path, reason)`` of the inputs that get none.

    Names are compared without case (``x.PNG`` and ``x.png`` would collide on a macOS or Windows disk). In sorted
    order the first input keeps a name and later ones fail; inputs of an unsupported kind (``anim.gif``) come last
    and fail with their own reason, so they never take a name a readable image needs.
    """
    sources = require_images(input_dir)
    supported = [s for s in sources if s.suffix.lower() not in UNSUPPORTED_SUFFIXES]
    planned, failed, owner = [], [], {}
    for src in sorted(supported):
        rel = src.relative_to(input_dir)
        name = name_of(rel)
        key = name.casefold()
        if key in owner:
            failed.append(
                (
                    str(src),
                    f"output {name} is already the output of {owner[key]} (the same stem, apart from "
                    "case or characters a name may not hold)",
                )
            )
            continue
        owner[key] = src
        planned.append(Planned(src, rel, outputs_of(name)))
    for src in sources:
        if src.suffix.lower() in UNSUPPORTED_SUFFIXES:
            failed.append((str(src), f"{UNSUPPORTED_SUFFIXES[src.suffix.lower()]} files are not supported; convert to PNG or JPEG"))
    return planned, failed


# --------------------------------------------------------------------------- the folder's own files


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of a regular file at ``path`` (never followed if a link), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def remove_recorded(folder: Path, rels: set[str]) -> set[str]:
    """Remove the files ``rels`` (relative to ``folder``) that the folder's record lists as the tool's own; returns
    those now gone. Only regular files whose real folder lies inside ``folder`` are removed: a link, folder or
    special file at a recorded name, or a name reached through a linked subfolder, is left as it is."""
    root = Path(os.path.realpath(folder))
    gone = set()
    for rel in sorted(rels):
        path = folder / rel
        if _identity(path) is None:
            if not os.path.lexists(path):
                gone.add(rel)
            continue
        if not Path(os.path.realpath(path.parent)).is_relative_to(root):
            continue
        with contextlib.suppress(OSError):
            writes.remove_own(path)
            gone.add(rel)
    return gone


@dataclass
class FolderJob:
    """A folder job's state between planning and the end of its run (see the module's docstring)."""

    folder: Path
    record_path: Path
    settings: dict
    planned: list[Planned]
    main: bool = True
    replacing: bool = False
    started: bool = False
    owned: set[str] = field(default_factory=set)
    before: dict[str, tuple | None] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    complete: bool = False
    closed: bool = False

    def paths(self) -> list[str]:
        return [o for p in self.planned for o in p.outputs]

    def start(self) -> None:
        """Main process, once every process has checked the folder: note what is there and write the record."""
        self.before = {rel: _identity(self.folder / rel) for rel in self.paths()}
        self.started = True
        write_output_record(self.record_path, {**self.settings, OUTPUTS: sorted(self.owned)}, self.replacing)

    def finish(self, failed_sources: list[str]) -> None:
        """The run completed; ``failed_sources`` are the inputs it could not process."""
        self.failed = set(failed_sources)
        self.complete = True

    def written(self) -> set[str]:
        """Outputs this run wrote: a new file, or one whose inode, mtime or size changed."""
        return {rel for rel in self.paths() if (now := _identity(self.folder / rel)) is not None and now != self.before.get(rel)}

    def close(self) -> None:
        """Update the record with what this run wrote and remove the tool's stale outputs (main process)."""
        if self.closed or not (self.main and self.started):
            return
        self.closed = True
        written = self.written()
        stale = self.owned - set(self.paths())  # inputs gone, or that now get no output
        if self.replacing and self.complete:
            # An input this run failed on keeps no output of the settings being replaced.
            stale |= {o for p in self.planned if str(p.src) in self.failed for o in p.outputs if o not in written}
        removed = remove_recorded(self.folder, stale & self.owned) if self.complete else set()
        owned = {rel for rel in (self.owned - removed) | written if _identity(self.folder / rel) is not None}
        still_replacing = self.replacing and not (self.complete and set(self.paths()) <= written)
        write_output_record(self.record_path, {**self.settings, OUTPUTS: sorted(owned)}, still_replacing)


@contextlib.contextmanager
def folder_job(
    folder: Path, record_path: Path, settings: dict, overwrite: bool, planned: list[Planned], command: str
) -> Iterator[FolderJob]:
    """Lock ``folder`` (main process), check its record against ``settings`` and yield the job; on leaving,
    update the record (see :class:`FolderJob`) and release the lock. The folder must exist."""
    main = is_main_process()
    if main:
        lock_output_folder(folder, command)
    try:
        old = read_output_record(record_path)
        job = FolderJob(
            folder,
            record_path,
            settings,
            planned,
            main=main,
            replacing=check_output_record(record_path, settings, overwrite),
            owned=recorded_outputs(old) if not (old or {}).get("unreadable") else set(),
        )
        try:
            yield job
        finally:
            job.close()
    finally:
        if main:
            unlock_folder(folder)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class FolderTarget:
    """The folder a run fills: where, the name of its record, what the record says, and which command fills it."""

    folder: Path
    record_name: str
    settings: dict
    command: str
    cleanup_factor: int | None = None  # ``pairs``: each input gives an HR (cleaned up by this factor) and an LR


def run_folder(
    target: FolderTarget,
    planned: list[Planned],
    jobs: list,
    generator,
    scale: int,
    opts,
    overwrite: bool,
    after: Callable[[FolderJob], None] | None = None,
):
    """Run G over ``jobs`` (one per ``planned`` input) into the locked target folder; returns the run's summary and
    whether this is the main process. ``after`` runs on the main process, still under the lock, once the record
    is up to date (``pairs`` writes its ``meta_info.txt`` there)."""
    from ..engines.inference import run_jobs

    record_path = target.folder / target.record_name
    check_output_record(record_path, target.settings, overwrite)  # a refusal creates nothing
    writes.check_writable_dir(target.folder)
    with folder_job(target.folder, record_path, target.settings, overwrite, planned, target.command) as job:
        # Replacing outputs made otherwise: every one is remade, or a later run would skip the old ones as done.
        summary, main = run_jobs(
            jobs,
            generator,
            scale,
            opts,
            overwrite=overwrite or job.replacing,
            label="pairs" if target.cleanup_factor is not None else "degrading",
            cleanup_factor=target.cleanup_factor,
            on_start=job.start,
        )
        job.finish([src for src, _ in summary.failed])
        job.close()
        if main and after is not None:
            after(job)
    return summary, main


__all__ = [
    "FolderJob",
    "FolderTarget",
    "Planned",
    "folder_job",
    "is_main_process",
    "plan_outputs",
    "remove_recorded",
    "run_folder",
    "safe_name",
]
