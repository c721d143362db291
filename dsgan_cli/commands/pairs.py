"""``pairs``: (HR, LR) training pairs for a super-resolution model, in the layout SR trainers read.

For every input image: HR = the image (or, with ``cleanup_factor`` N > 1, the
image first downscaled by N to remove its own noise: the original paper's
TDSR setting), cropped at the bottom/right to a multiple of the scale; LR =
G(bicubic downscale of HR by the scale), so LR is exactly HR / scale. Pairs go
to ``DIR/hr/NAME`` and ``DIR/lr/NAME`` (same name and extension, one flat
folder each, as BasicSR's paired-folder mode expects), and ``DIR/meta_info.txt``
lists them BasicSR-style (``NAME (H,W,3)`` with the HR shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.images import image_size
from ..engines.folder_job import FolderJob, FolderTarget, Planned, plan_outputs, run_folder, safe_name
from ..engines.jobs import FolderSummary, Job
from ..engines.run_settings import RunOptions, check_options, output_format
from ..plumbing.errors import DsganError, file_error
from ..plumbing.output_record import output_record
from ..plumbing.writes import check_destinations, check_output_dir, write_bytes_atomic

META_INFO = "meta_info.txt"
#: The pairs folder's record of the generator and settings that made its pairs (see output_record).
SETTINGS_FILE = "pairs.json"


@dataclass
class PairsSummary(FolderSummary):
    """What a ``pairs`` run did: ``written`` pairs this run, and ``pairs`` complete in the folder after it."""

    pairs: int = 0
    cleanup_factor: int = 1


def pair_name(rel: Path, suffix: str) -> str:
    """Flat output name for an input's relative path: ``a/b/face.jpg`` -> ``a__b__face.png``; whitespace and
    control characters become ``_`` (``my photo.png`` -> ``my_photo.png``).

    BasicSR lists only the top level of each folder and pairs files by base name, so a nested tree is flattened
    instead of mirrored; it reads ``meta_info.txt`` one pair per line, the name up to its first space.
    """
    return safe_name("__".join(rel.with_suffix("").parts)) + suffix


def plan_pairs(input_dir: Path, out_dir: Path, suffix: str) -> tuple[list[Planned], list[tuple[str, str]]]:
    """Every input image with its pair's ``hr/NAME`` and ``lr/NAME``; inputs whose flat name is already taken
    (compared without case, after the mapping of :func:`pair_name`) fail."""
    return plan_outputs(input_dir, lambda rel: pair_name(rel, suffix), lambda name: (f"hr/{name}", f"lr/{name}"))


def check_pairs_dir(input_dir: Path, out_dir: Path) -> None:
    """Refuse a pairs folder whose hr/ or lr/ would be, contain or lie inside the input folder."""
    check_output_dir(input_dir, out_dir)
    inp = input_dir.resolve()
    for sub in (out_dir / "hr", out_dir / "lr"):
        check_output_dir(input_dir, sub)
        if sub.resolve() in inp.parents:
            raise file_error(out_dir, f"its {sub.name}/ folder holds the input folder {input_dir}; choose another pairs folder")


def write_meta_info(out_dir: Path, names: list[str]) -> None:
    """``meta_info.txt``: one ``NAME (H,W,3)`` line per complete pair (HR shape), sorted."""
    lines = []
    for name in sorted(names):
        w, h = image_size(out_dir / "hr" / name)
        lines.append(f"{name} ({h},{w},3)\n")
    # A name that is not valid UTF-8 is written as its own bytes, as the file system holds it.
    write_bytes_atomic(out_dir / META_INFO, "".join(lines).encode("utf-8", "surrogateescape"))


def make_pairs(
    input_dir,
    output_dir,
    checkpoint,
    opts: RunOptions = RunOptions(),
    *,
    scale: int | None = None,
    cleanup_factor: int = 1,
    overwrite: bool = False,
) -> PairsSummary:
    """Write HR/LR pairs for every image under ``input_dir`` into ``out_dir/hr`` and ``out_dir/lr``.

    LR = G(bicubic downscale of HR) through the same engine as ``degrade``, run as ``opts`` says: for the same
    image, seed and generator, a pair's LR is byte for byte ``degrade``'s output.
    """
    from .degrade import load_for_folder

    input_dir, out_dir, checkpoint = Path(input_dir), Path(output_dir), Path(checkpoint)
    _, suffix = output_format(opts.fmt)
    if cleanup_factor < 1:
        raise DsganError(f"--cleanup-factor must be 1 (none) or more, got {cleanup_factor}")
    check_options(opts.batch_size, opts.workers, opts.tile, opts.precision)
    generator, meta, scale = load_for_folder(checkpoint, input_dir, scale, True)
    check_pairs_dir(input_dir, out_dir)
    planned, failed = plan_pairs(input_dir, out_dir, suffix)
    jobs = [Job(p.src, out_dir / p.outputs[1], p.rel.as_posix(), out_dir / p.outputs[0]) for p in planned]
    check_destinations(
        [d for j in jobs for d in (j.hr_dest, j.dest)] + [out_dir / META_INFO, out_dir / SETTINGS_FILE],
        [input_dir],
        [p.src for p in planned],
    )
    record = output_record(
        meta["sha256"], scale, suffix, opts.precision, opts.seed if generator.noise_dim else None, cleanup_factor=cleanup_factor
    )
    complete: list[str] = []

    def list_pairs(job: FolderJob) -> None:
        # Runs after the record is up to date, so a stale pair removed as the tool's own is not listed.
        names = [p.outputs[0].removeprefix("hr/") for p in planned if all((out_dir / o).is_file() for o in p.outputs)]
        write_meta_info(out_dir, names)
        complete.extend(names)

    target = FolderTarget(out_dir, SETTINGS_FILE, record, "pairs", cleanup_factor=cleanup_factor)
    part, _ = run_folder(target, planned, jobs, generator, scale, opts, overwrite, after=list_pairs)
    summary = PairsSummary(**{**vars(part), "output_dir": str(out_dir)}, cleanup_factor=cleanup_factor)
    summary.failed = sorted(failed + summary.failed)
    summary.pairs = len(complete)
    return summary


def report(summary: PairsSummary, console) -> None:
    """Print the human summary on ``console``."""
    for path, reason in summary.failed:
        console.print(f"failed: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {summary.written} pairs, skipped {summary.skipped} (already there), failed {len(summary.failed)} "
        f"in {summary.seconds:.1f} s; {summary.pairs} pairs (x{summary.scale}, clean-up x{summary.cleanup_factor}) "
        f"in {summary.output_dir}/hr, /lr and {META_INFO}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
