"""The inference engine: G applied to a folder's images, shared by ``degrade``, ``pairs`` and the demo.

One path from file to output: decode (EXIF orientation, odd modes converted),
optionally clean up and crop (``pairs``), Xb = :func:`models.downscale`, Xd = G(Xb)
with a noise map seeded per image from (seed, relative path), rounded to 8 bits and
written atomically.

Pipeline: decoding and downscaling run ahead of the generator (DataLoader
worker processes, or one background thread when ``workers=0``); images are
batched by size (:mod:`.input_batches`); G runs batched under ``torch.inference_mode``, large images in
tiles that give exactly the whole-image output; on out-of-memory a batch is
split and an image tiled finer (:mod:`.generate`). Encoding and the atomic writes run in a thread
pool (PIL releases the GIL while encoding), so they overlap with the next
batch's compute (:mod:`.output_writer`). Under ``accelerate launch`` each process takes every N-th
file, so each output is written exactly once. The options and the settings they resolve to are
:mod:`.run_settings`'s; this module runs the jobs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import torch

from ..method.models import Generator
from ..plumbing import writes
from ..plumbing.progress import progress_bar
from ..plumbing.writes import partial_prefix
from .generate import generate_fitting, image_noise, is_oom
from .input_batches import DecodeDataset, in_thread, iter_batches, iter_decoded
from .jobs import FolderSummary, Job
from .output_writer import Writer, for_the_encoder
from .run_settings import RunOptions, Settings, default_settings


def job_batches(jobs: list[Job], settings: Settings, pairs: bool, cleanup_factor: int) -> Iterator[tuple]:
    """The events of decoding ``jobs`` into batches (see :func:`iter_batches`)."""
    dataset = DecodeDataset([j.src for j in jobs], settings.scale, pairs, cleanup_factor)
    decoded = iter_decoded(dataset, settings.workers, depth=2 * settings.batch_size)
    return iter_batches(decoded, settings.batch_size, settings.tile, settings.channels_last)


def process_jobs(
    jobs: list[Job],
    generator: Generator,
    device: torch.device,
    settings: Settings,
    opts: RunOptions,
    *,
    label: str = "degrading",
    cleanup_factor: int | None = None,
) -> FolderSummary:
    """Run G over ``jobs`` (already filtered for skips); returns this process's summary. ``opts``: progress, noise seed,
    per-stage seconds; ``cleanup_factor`` (not None) makes pairs. An image G fails on fails alone (its batch is rerun one
    image at a time); on any error the input and encoder threads stop before it propagates: nothing keeps writing."""
    summary = FolderSummary()
    modes: Counter[str] = Counter()
    lock = threading.Lock()
    stats = opts.stats if opts.stats is not None else {}
    stats.update(wait_input=0.0, generator=0.0, to_uint8=0.0)
    pairs, factor = cleanup_factor is not None, cleanup_factor or 1
    with progress_bar(opts.progress) as bar:
        task = bar.add_task(label, total=len(jobs))

        def on_done(job: Job, err: str | None) -> None:
            with lock:
                if err is None:
                    summary.written += 1
                else:
                    summary.failed.append((str(job.src), err))
            bar.advance(task)

        writer = Writer(settings.fmt, settings.encoder_threads, max_pending=2 * settings.batch_size + 4, on_done=on_done)

        def generate(x: torch.Tensor, indices: list[int], hrs: list, tiled: bool) -> None:
            t = time.perf_counter()
            noise = image_noise(generator, x, [jobs[i].rel for i in indices], opts.seed)
            try:
                y = generate_fitting(generator, x, device, settings, noise, settings.tile if tiled else None)
            except (RuntimeError, ValueError) as e:
                if is_oom(e):
                    raise
                if len(indices) > 1:  # find the image at fault; the rest of the batch is written
                    for k in range(len(indices)):
                        generate(x[k : k + 1], indices[k : k + 1], hrs[k : k + 1], tiled)
                else:
                    on_done(jobs[indices[0]], f"the generator cannot process it ({str(e).splitlines()[0]})")
                return
            t2 = time.perf_counter()
            out = for_the_encoder(y)
            stats["generator"] += t2 - t
            stats["to_uint8"] += time.perf_counter() - t2
            for i, arr, hr in zip(indices, out, hrs):
                writer.submit(arr, jobs[i], hr)

        start = time.perf_counter()
        # Decoding, downscaling, bucketing and stacking run on one input thread (fed by worker processes), two batches ahead.
        events = in_thread(lambda: job_batches(jobs, settings, pairs, factor), depth=2)
        try:
            while True:
                t = time.perf_counter()
                event = next(events, None)
                stats["wait_input"] += time.perf_counter() - t
                if event is None:
                    break
                kind = event[0]
                if kind == "failed":
                    on_done(jobs[event[1]], event[2])
                elif kind == "mode":
                    modes[event[1]] += 1
                else:
                    generate(event[2], event[1], event[3], tiled=kind == "tiled")
            writer.close()
        finally:
            events.close()
            writer.cancel()
    summary.seconds = time.perf_counter() - start
    summary.converted_modes = dict(sorted(modes.items()))
    summary.images_per_second = summary.written / summary.seconds if summary.seconds > 0 else 0.0
    stats["encode_write"] = writer.encode_seconds
    stats["total"] = summary.seconds
    return summary


def merge_summaries(parts: list[FolderSummary]) -> FolderSummary:
    """Combine per-process summaries into one."""
    total = FolderSummary()
    modes: Counter[str] = Counter()
    for p in parts:
        total.written += p.written
        total.skipped += p.skipped
        total.failed.extend(p.failed)
        modes.update(p.converted_modes)
        total.seconds = max(total.seconds, p.seconds)
    total.failed.sort()
    total.converted_modes = dict(sorted(modes.items()))
    total.images_per_second = total.written / total.seconds if total.seconds > 0 else 0.0
    return total


def remove_stale_partials(jobs: list[Job]) -> int:
    """Delete temp files a killed earlier run left for these outputs (``.NAME.XXXX.partial``); return how many.

    Only the temporaries of outputs this run is about to write are touched,
    and each process only sees its own share, so nothing in use is removed.
    """
    wanted: dict[Path, set[str]] = {}
    for job in jobs:
        wanted.setdefault(job.dest.parent, set()).add(job.dest.name)
    removed = 0
    for folder, names in wanted.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        prefixes = {partial_prefix(folder / name) for name in names}
        for entry in entries:
            # Temp names are PREFIX + random characters (no dot) + ".partial" (writes.atomic_path).
            stem = entry[: -len(".partial")] if entry.endswith(".partial") else ""
            if any(stem.startswith(p) and "." not in stem[len(p) :] for p in prefixes):
                with contextlib.suppress(OSError):
                    writes.remove_own(folder / entry)
                    removed += 1
    return removed


def run_jobs(
    jobs: list[Job],
    generator: Generator,
    scale: int,
    opts: RunOptions,
    *,
    overwrite: bool,
    label: str = "degrading",
    cleanup_factor: int | None = None,
    on_start: Callable[[], None] | None = None,
) -> tuple[FolderSummary, bool]:
    """Run G over a planned folder job list in this process's share; returns the summary over every
    process and whether this is the main process.

    ``cleanup_factor`` (not None) makes pairs: each job's HR is written too. ``on_start`` runs on the main
    process once every process has checked its folder (e.g. writes the folder's record); jobs whose outputs
    exist are skipped unless ``overwrite``.
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    accelerator = Accelerator(cpu=opts.cpu)
    device = accelerator.device
    settings = default_settings(device, scale, opts, num_processes=accelerator.num_processes)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    generator = generator.to(device)
    if settings.channels_last:
        generator = generator.to(memory_format=torch.channels_last)

    rank, world = accelerator.process_index, accelerator.num_processes
    accelerator.wait_for_everyone()  # every process has checked the folder's record before it changes
    if rank == 0 and on_start is not None:
        on_start()
    # Striding (not accelerator.prepare) so no file is padded in twice to even out the shares.
    mine = jobs[rank::world]
    todo = [j for j in mine if overwrite or not j.done()]
    # Only this process writes its share's outputs, so every leftover temporary of them is stale.
    remove_stale_partials(mine + [Job(j.src, j.hr_dest) for j in mine if j.hr_dest is not None])
    label = label if world == 1 else f"{label} (process 0 of {world})"
    shown = replace(opts, progress=opts.progress and accelerator.is_main_process)  # one bar, the main process's
    part = process_jobs(todo, generator, device, settings, shown, label=label, cleanup_factor=cleanup_factor)
    part.skipped = len(mine) - len(todo)
    # The summaries themselves are gathered (pickled), not their JSON form: the sums use the unrounded seconds.
    parts = gather_object([part]) if world > 1 else [part]
    if world > 1:
        # Tear the process group down here: left to interpreter exit, gloo's threads can abort a rank
        # (measured: "terminate called without an active exception", exit -6, after all files were written).
        accelerator.end_training()
    summary = merge_summaries(parts)
    summary.scale, summary.device, summary.processes = scale, str(device), world
    return summary, rank == 0
