"""``dsgan prepare``: detect, align and crop faces from a folder of photos.

For each input file one manifest record is written to ``manifest.jsonl`` in
the output folder (in input order), with a status:

- ``ok``: one face found and written;
- ``several_faces``: several found; the best one (largest box area x detector
  score) is written and the others are listed under ``other_faces``;
- ``no_face``: nothing detected; ``too_small``: the best face is narrower than
  ``min_face`` pixels (upscaling it would not give a real HR face);
- ``unreadable``: the file is not a decodable image (``reason`` says why);
- ``name_clash``: another input already takes its output name (``a.png`` and
  ``a.jpg``, or ``x.PNG`` and ``x.png``); it is not processed.

Runs are resumable: records are journaled as they finish, so a re-run after
an interruption reuses them; the settings are recorded in the output folder
and a rerun with other settings is refused without ``--overwrite``.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import UNSUPPORTED_SUFFIXES, ImageReadError, list_images, load_rgb, unique_output_names
from ..engines.folder_job import remove_recorded
from ..plumbing.errors import DsganError, file_error, write_stdout
from ..plumbing.folder_lock import lock_output_folder, unlock_folder
from ..plumbing.jsonl import read_jsonl
from ..plumbing.output_record import RunSummary, recorded_outputs
from ..plumbing.progress import progress_bar
from ..plumbing.reads import file_sha256
from ..plumbing.writes import (
    check_destinations,
    check_output_dir,
    check_writable_dir,
    open_append,
    remove_own,
    save_image_atomic,
    write_bytes_atomic,
)

STATUSES = ("ok", "several_faces", "no_face", "too_small", "unreadable", "name_clash", "failed")
#: Statuses of inputs that were not processed (exit code 1).
FAILED = ("unreadable", "name_clash", "failed")
MANIFEST = "manifest.jsonl"
JOURNAL = ".manifest.journal.jsonl"
#: Hidden file naming the settings the crops in the output folder were made with.
SETTINGS_RECORD = ".dsgan-prepare.json"


@dataclass
class PrepareSummary(RunSummary):
    """The shared summary (``written``: crops written; ``skipped``: inputs whose records were reused; ``failed``:
    inputs not processed) plus the manifest's path and the count of inputs per status."""

    manifest: Path = field(kw_only=True)
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    #: Files without an image suffix (notes, sidecars), left alone as degrade and pairs leave them.
    not_images: list[str] = field(default_factory=list)


def default_output_dir(input_dir: Path, size: int) -> Path:
    """Sibling of the input folder: ``raw`` -> ``raw_aligned_256``."""
    resolved = input_dir.resolve()
    return resolved.parent / f"{resolved.name}_aligned_{size}"


def default_min_face(size: int) -> int:
    """Smallest accepted face box width: a quarter of the output side (at most 4x upscaling of the box)."""
    return max(16, size // 4)


def plan_outputs(files: list[Path], input_dir: Path) -> tuple[dict[Path, Path], dict[Path, Path]]:
    """Output path (relative, .png) per input, and the inputs refused because another input owns that name."""
    rel = {f.relative_to(input_dir): f for f in files}
    names, refused = unique_output_names(rel, ".png")
    return {rel[r]: out for r, out in names.items()}, {rel[r]: rel[owner] for r, owner in refused.items()}


def _source_key(path: Path) -> dict[str, Any] | None:
    """Identity of an input file for reusing its record on a re-run (None when it cannot be read): size, mtime,
    ctime and content digest."""
    try:
        st = path.stat()
        digest = file_sha256(path)
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "sha256": digest}


def _same_source(old: dict[str, Any], src: Path) -> bool:
    """Whether ``src`` is still the file an earlier record describes.

    Size and mtime must match. A photo rewritten in place keeping both (``cp -p``, ``rsync --inplace``)
    cannot keep its ctime; a changed ctime alone (``chmod``, a copy with ``cp -a``) costs one read to compare
    the content digest, not a new face detection. Records from before the ctime and digest were kept are
    judged by size and mtime, as they were made.
    """
    try:
        st = src.stat()
    except OSError:
        return False
    if old.get("bytes") != st.st_size or old.get("mtime_ns") != st.st_mtime_ns:
        return False
    if "ctime_ns" not in old or old["ctime_ns"] == st.st_ctime_ns:
        return True
    try:
        return old.get("sha256") == file_sha256(src)
    except OSError:
        return False


_DETECTOR = None


def _worker_init(kind: str) -> None:
    """Load dlib models once per worker process."""
    global _DETECTOR
    from ..data.faces import FaceDetector

    _DETECTOR = FaceDetector(kind)


def _r(values, nd: int = 2) -> list:
    """Round a sequence of numbers for a stable, readable manifest."""
    return [round(float(v), nd) for v in values]


def process_photo(task: tuple[str, str, str, str, int, float, int, bool]) -> dict[str, Any]:
    """Detect and align one photo; write its crop; return its manifest record."""
    src, rel, out_rel, out_dir, size, margin, min_face, overwrite = task
    record: dict[str, Any] = {
        "input": rel,
        "status": None,
        "reason": None,
        "output": None,
        "score": None,
        "box": None,
        "landmarks": None,
        "other_faces": [],
        "source": _source_key(Path(src)),
    }
    try:
        img, _ = load_rgb(src)
    except ImageReadError as e:
        record.update(status="unreadable", reason=e.reason)
        return record
    try:
        return _align_and_write(img, record, out_dir, out_rel, size, margin, min_face, overwrite)
    except DsganError:
        raise
    except OSError as e:
        if e.errno in RUN_STOPPING_ERRNOS:  # the output folder's failure, not the photo's: every photo would fail
            raise
        record.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        return record
    except Exception as e:  # noqa: BLE001 - one photo's failure (e.g. a detector error on odd content) is its own
        record.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        return record


#: Errors of the output folder (full disk, quota, read-only, no permission): they stop the run instead of
#: failing every photo in turn.
RUN_STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _align_and_write(
    img, record: dict[str, Any], out_dir: str, out_rel: str, size: int, margin: float, min_face: int, overwrite: bool
) -> dict[str, Any]:
    """Detect, align and write one decoded photo's crop; fills and returns its record."""
    from ..data.align import align_face

    faces = _DETECTOR.detect(img)
    if not faces:
        record.update(status="no_face", reason="no face detected")
        return record
    best, others = faces[0], faces[1:]
    record.update(
        score=round(best.score, 4),
        box=_r(best.box),
        landmarks=[_r(p) for p in best.landmarks],
        other_faces=[{"score": round(f.score, 4), "box": _r(f.box)} for f in others],
    )
    if best.width < min_face:
        record.update(status="too_small", reason=f"face is {best.width:.0f} px wide, below --min-face {min_face}")
        return record
    dest = Path(out_dir) / out_rel
    if overwrite or not dest.exists():  # ``overwrite`` is also set for folders this command made (see prepare_folder)
        save_image_atomic(align_face(img, best.landmarks, size, margin), dest)
    record.update(
        status="several_faces" if others else "ok",
        output=out_rel,
        reason=f"{len(faces)} faces; kept the largest x most confident" if others else None,
    )
    return record


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records of an earlier manifest or journal by input path; torn last lines are ignored."""
    return {rec["input"]: rec for rec in read_jsonl(path) if isinstance(rec.get("input"), str)}


def _reusable(rec: dict[str, Any] | None, src: Path, out_dir: Path) -> bool:
    """An earlier record still describes this input and its output (if any) exists."""
    # A failed photo is tried again: its failure may have been the folder's, not the photo's.
    if (
        rec is None
        or not isinstance(rec.get("source"), dict)
        or not _same_source(rec["source"], src)
        or rec.get("status") not in STATUSES
        or rec.get("status") == "failed"
    ):
        return False
    return rec.get("output") is None or (out_dir / rec["output"]).is_file()


@dataclass(frozen=True)
class FaceCrop:
    """How each face is cut: ``size`` (the crop's side in pixels), the face ``detector`` (hog or cnn), the ``margin``
    of extra room around the face, and ``min_face`` (narrower faces are skipped; None: size/4)."""

    size: int = 256
    detector: str = "hog"
    margin: float = 0.0
    min_face: int | None = None


def prepare_folder(
    input_dir: str | Path,
    output_dir: str | Path | None = None,
    crop: FaceCrop = FaceCrop(),
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Align every photo under ``input_dir`` into ``crop.size`` x ``crop.size`` face crops and a manifest."""
    started = time.perf_counter()
    input_dir = Path(input_dir)
    size, detector, margin, min_face = crop.size, crop.detector, crop.margin, crop.min_face
    if size < 16:
        raise DsganError(f"--size must be at least 16, got {size}")
    if not 0 <= margin <= 4:  # also catches NaN
        raise DsganError(f"--margin must be between 0 and 4, got {margin}")
    every_file = list_images(input_dir, all_files=True)
    files = list_images(input_dir)
    if not files:
        raise file_error(input_dir, "input folder holds no images" if every_file else "input folder holds no files")
    images = set(files)
    not_images = [f.relative_to(input_dir).as_posix() for f in every_file if f not in images]
    out_dir = Path(output_dir) if output_dir is not None else default_output_dir(input_dir, size)
    check_output_dir(input_dir, out_dir)
    min_face = default_min_face(size) if min_face is None else min_face
    settings = _settings(size, margin, min_face, detector)
    outputs, clashes = plan_outputs(files, input_dir)
    check_destinations([out_dir / o for o in outputs.values()] + [out_dir / MANIFEST, out_dir / JOURNAL], [input_dir], files)
    check_settings_record(out_dir, settings, overwrite)  # a refusal creates nothing
    check_writable_dir(out_dir)
    from ..data.faces import FaceDetector

    FaceDetector(detector)  # fail fast (missing models, bad kind) before starting workers
    # One run at a time in the folder (the lock every folder command takes); its record is read under the lock.
    lock_output_folder(out_dir, "prepare")
    try:
        ours = check_settings_record(out_dir, settings, overwrite)
        return _prepare_locked(
            files, input_dir, out_dir, PrepareRun(settings, outputs, clashes, ours, overwrite, not_images), progress, workers, started
        )
    finally:
        unlock_folder(out_dir)


@dataclass(frozen=True)
class PrepareRun:
    """A prepare run's plan: its settings, each input's output name, the refused inputs, whether this command
    made the folder, ``--overwrite``, and the files skipped for having no image suffix."""

    settings: dict[str, Any]
    outputs: dict[Path, Path]
    clashes: dict[Path, Path]
    ours: bool
    overwrite: bool
    not_images: list[str]


def _prepare_locked(
    files: list[Path], input_dir: Path, out_dir: Path, run: PrepareRun, progress: bool, workers: int | None, started: float
) -> PrepareSummary:
    """The work of :func:`prepare_folder` once the output folder is locked."""
    settings, outputs, clashes, ours, overwrite = run.settings, run.outputs, run.clashes, run.ours, run.overwrite
    size, margin, min_face, detector = settings["size"], settings["margin"], settings["min_face"], settings["detector"]
    write_bytes_atomic(out_dir / SETTINGS_RECORD, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())

    earlier = {**_read_records(out_dir / MANIFEST), **_read_records(out_dir / JOURNAL)}
    # The crops earlier manifests list are this command's own: those no input keeps are removed at the end.
    owned = recorded_outputs({"outputs": [rec.get("output") for rec in earlier.values()]})
    previous = {} if overwrite else earlier
    records: dict[str, dict[str, Any]] = {}
    tasks, n_clashes = [], 0
    for f in files:
        rel = f.relative_to(input_dir).as_posix()
        if f in clashes and f.suffix.lower() not in UNSUPPORTED_SUFFIXES:
            owner = clashes[f]
            records[rel] = _clash_record(rel, owner.relative_to(input_dir), outputs[owner], settings)
            n_clashes += 1
            continue
        rec = previous.get(rel)
        if rec is not None and rec.get("settings") == settings and _reusable(rec, f, out_dir):
            records[rel] = rec
        else:
            # A crop in a folder this command made is stale once its record is not reused: replace it.
            # An unsupported file (no output name of its own when another input took it) is read and reported.
            out_rel = outputs.get(f, Path(rel)).as_posix()
            tasks.append((str(f), rel, out_rel, str(out_dir), size, margin, min_face, overwrite or ours))
    summary = PrepareSummary(
        output_dir=str(out_dir), manifest=out_dir / MANIFEST, skipped=len(records) - n_clashes, not_images=run.not_images
    )
    journal_path = out_dir / JOURNAL
    with open_append(journal_path) as journal:
        for rec in _run(tasks, detector, workers, progress, len(files), len(records)):
            rec["settings"] = settings
            records[rec["input"]] = rec
            journal.write(json.dumps(rec, sort_keys=True) + "\n")
            journal.flush()
            summary.written += rec["output"] is not None
    ordered = [records[f.relative_to(input_dir).as_posix()] for f in files]
    write_bytes_atomic(summary.manifest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered).encode())
    remove_own(journal_path)
    # A crop whose input is gone, or now has no face (or too small a one), would still be read as training data.
    remove_recorded(out_dir, owned - {rec["output"] for rec in ordered if rec.get("output")})
    for rec in ordered:
        summary.counts[rec["status"]] += 1
        if rec["status"] in FAILED:
            summary.failed.append((str(input_dir / rec["input"]), rec["reason"]))
    summary.seconds = time.perf_counter() - started
    return summary


def _settings(size: int, margin: float, min_face: int, detector: str) -> dict[str, Any]:
    """Settings a record depends on; a record made with others is recomputed."""
    return {"size": size, "margin": margin, "min_face": min_face, "detector": detector}


def check_settings_record(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Refuse, without ``--overwrite``, a folder whose crops were made with other settings; True when this command made it."""
    from ..plumbing.output_record import read_output_record

    path = out_dir / SETTINGS_RECORD
    old = read_output_record(path)
    if old is None:
        # Folders from before the record: the manifest or journal shows this command made them.
        return (out_dir / MANIFEST).is_file() or (out_dir / JOURNAL).is_file()
    if old != settings and not overwrite:
        changed = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise file_error(
            path,
            f"the crops in this folder were made with other settings ({changed}); "
            "pass --overwrite to replace them, or choose another --out",
        )
    return True


def _clash_record(rel: str, owner: Path, output: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Manifest record of an input refused because ``owner`` takes its output name."""
    return {
        "input": rel,
        "status": "name_clash",
        "output": None,
        "score": None,
        "box": None,
        "landmarks": None,
        "other_faces": [],
        "source": None,
        "settings": settings,
        "reason": f"output {output.as_posix()} is already the output of {owner.as_posix()} (same name apart from "
        "suffix or case); rename one of them",
    }


def _run(tasks: list, detector: str, workers: int | None, progress: bool, total: int, done: int) -> Iterator[dict[str, Any]]:
    """Process tasks in worker processes (or inline for one worker), with a progress bar."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    with progress_bar(progress) as bar:
        task_id = bar.add_task("prepare", total=total, completed=done)
        if workers == 1:
            _worker_init(detector)
            results: Iterator[dict[str, Any]] = map(process_photo, tasks)
            pool = None
        else:
            pool = ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(detector,))
            results = pool.map(process_photo, tasks, chunksize=1)
        try:
            for rec in results:
                bar.advance(task_id)
                yield rec
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)


def report(summary: PrepareSummary, as_json: bool = False) -> int:
    """Print the summary (table on stderr, or JSON on stdout) and return the exit code."""

    from rich.console import Console
    from rich.table import Table

    from ..plumbing.errors import EXIT_ITEMS_FAILED, EXIT_OK

    console = Console(stderr=True)
    if summary.not_images:
        shown = ", ".join(summary.not_images[:5]) + (", ..." if len(summary.not_images) > 5 else "")
        console.print(
            f"note: skipped {len(summary.not_images)} file(s) without an image suffix ({shown})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    for path, reason in summary.failed:
        console.print(f"not processed: {path}: {reason}", markup=False, highlight=False)
    table = Table(title=f"prepare: {summary.output_dir}")
    table.add_column("status")
    table.add_column("count", justify="right")
    for status, n in summary.counts.items():
        table.add_row(status, str(n))
    console.print(table)
    console.print(
        f"manifest: {summary.manifest}  ({summary.written} crops written, {summary.skipped} records reused)", markup=False, highlight=False
    )
    if as_json:
        write_stdout(json.dumps(summary.to_dict(), indent=2) + "\n")
    return EXIT_ITEMS_FAILED if summary.failed else EXIT_OK
