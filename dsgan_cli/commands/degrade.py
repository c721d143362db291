"""``degrade``: turn a folder of HR images into realistic LR images with a trained generator.

For every input image: Xb = :func:`models.downscale` by the checkpoint's scale,
Xd = G(Xb), written under the output folder with the same relative path and
stem. The work is :mod:`dsgan_cli.engines.inference`'s, and the folder's lock and record
:mod:`dsgan_cli.engines.folder_job`'s (both shared with ``pairs``); this module plans the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engines.folder_job import FolderTarget, Planned, plan_outputs, run_folder
from ..engines.jobs import FolderSummary, Job
from ..engines.run_settings import RunOptions, check_options, output_format
from ..method.models import Generator
from ..plumbing.errors import EXIT_USAGE, DsganError, file_error
from ..plumbing.output_record import output_record
from ..plumbing.writes import check_destinations, check_output_dir

#: Hidden file in the output folder naming the generator and settings that made its outputs.
RUN_RECORD = ".dsgan-degrade.json"


# --------------------------------------------------------------------------- planning


def plan_jobs(input_dir: Path, output_dir: Path, suffix: str) -> tuple[list[Planned], list[Job], list[tuple[str, str]]]:
    """Map every input image to its output path (same relative path, ``suffix``); inputs whose output name is
    already taken, or that cannot be read by their kind, fail (:func:`folder_job.plan_outputs`).

    Raises :class:`DsganError` when any output would land inside the input
    tree (e.g. through a symlinked output subfolder), before anything is written.
    """
    planned, failed = plan_outputs(input_dir, lambda rel: rel.with_suffix(suffix).as_posix(), lambda name: (name,))
    jobs = [Job(p.src, output_dir / p.outputs[0], p.rel.as_posix()) for p in planned]
    check_destinations([j.dest for j in jobs], [input_dir], [p.src for p in planned])
    return planned, jobs, failed


def resolve_scale(meta_scale: int | None, scale: int | None, downscale_inputs: bool, checkpoint: Path) -> int:
    """The downscale factor: 1 with ``--no-downscale``, else ``--scale`` or the checkpoint's."""
    if not downscale_inputs:
        if scale not in (None, 1):
            raise DsganError("--scale and --no-downscale contradict each other; give one of them", EXIT_USAGE)
        return 1
    if scale is not None:
        if scale < 1:
            raise DsganError(f"--scale must be a positive integer, got {scale}", EXIT_USAGE)
        return scale
    if not meta_scale:
        raise file_error(checkpoint, "checkpoint metadata has no scale; pass --scale N (or --no-downscale)")
    return int(meta_scale)


def load_for_folder(checkpoint: Path, input_dir: Path, scale: int | None, downscale_inputs: bool) -> tuple[Generator, dict, int]:
    """The checkpoint's generator, its metadata and the run's scale; a missing input folder is refused."""
    from ..engines.checkpoint import load_generator

    generator, meta = load_generator(checkpoint)
    run_scale = resolve_scale(meta.get("scale"), scale, downscale_inputs, checkpoint)
    if not input_dir.exists():
        raise file_error(input_dir, "no such folder")
    return generator, meta, run_scale


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class DegradeScale:
    """``--scale`` (None: the checkpoint's) and whether inputs are downscaled at all (``--no-downscale``)."""

    scale: int | None = None
    downscale: bool = True


def degrade_folder(
    input_dir, output_dir, checkpoint, opts: RunOptions = RunOptions(), how: DegradeScale = DegradeScale(), overwrite: bool = False
) -> FolderSummary:
    """Degrade every image under ``input_dir`` into ``output_dir`` with the generator in ``checkpoint``.

    ``opts`` says how G runs (output format, device, batching, precision, progress); ``opts.stats``, when
    given, receives this process's per-stage seconds (for the benchmark), and ``opts.seed`` seeds the
    generator's noise input (for generators that take one). ``how`` is the downscale.
    Raises :class:`DsganError` (exit 2) for usage problems: a bad checkpoint,
    a missing or empty input folder, an output folder inside the input, a folder another run is writing into.
    Per-image problems are returned in ``summary.failed``.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    _, suffix = output_format(opts.fmt)
    check_options(opts.batch_size, opts.workers, opts.tile, opts.precision)
    generator, meta, run_scale = load_for_folder(Path(checkpoint), input_dir, how.scale, how.downscale)
    check_output_dir(input_dir, output_dir)
    planned, jobs, failed = plan_jobs(input_dir, output_dir, suffix)
    record = output_record(meta["sha256"], run_scale, suffix, opts.precision, opts.seed if generator.noise_dim else None)
    target = FolderTarget(output_dir, RUN_RECORD, record, "degrade")
    summary, _ = run_folder(target, planned, jobs, generator, run_scale, opts, overwrite)
    summary.failed = sorted(failed + summary.failed)
    summary.output_dir = str(output_dir)
    return summary


def report(summary: FolderSummary, console) -> None:
    """Print the human summary (written / skipped / failed) on ``console``."""
    if summary.converted_modes:
        detail = ", ".join(f"{m}: {n}" for m, n in summary.converted_modes.items())
        n = sum(summary.converted_modes.values())
        console.print(f"note: {n} image(s) converted to 8-bit RGB ({detail})", soft_wrap=True)
    for path, reason in summary.failed:
        console.print(f"failed: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {summary.written}, skipped {summary.skipped} (already there), failed {len(summary.failed)} "
        f"in {summary.seconds:.1f} s ({summary.images_per_second:.2f} images/s) -> {summary.output_dir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
