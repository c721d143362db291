"""The inference engine: G applied to a folder's images, shared by ``degrade``, ``pairs`` and the demo.

One path from file to output: decode (EXIF orientation, odd modes converted),
optionally clean up and crop (``pairs``), Xb = :func:`models.downscale`, Xd = G(Xb)
with a noise map seeded per image from (seed, relative path), rounded to 8 bits and
written atomically.

Pipeline: decoding and downscaling run ahead of the generator (DataLoader
worker processes, or one background thread when ``workers=0``); images are
batched by size; G runs batched under ``torch.inference_mode``, large images in
tiles that give exactly the whole-image output; on out-of-memory a batch is
split and an image tiled finer. Encoding and the atomic writes run in a thread
pool (PIL releases the GIL while encoding), so they overlap with the next
batch's compute. Under ``accelerate launch`` each process takes every N-th
file, so each output is written exactly once.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
import zlib
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..plumbing import writes
from ..plumbing.errors import EXIT_USAGE, DsganError
from ..plumbing.output_record import RunSummary
from ..data.images import ImageReadError, image_to_tensor, load_rgb, to_uint8
from ..plumbing.writes import partial_prefix, save_image_atomic
from ..method.models import Generator, downscale
from ..plumbing.progress import progress_bar


#: ``--format`` value -> (PIL format name, file suffix).
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", ".png"),
    "jpg": ("JPEG", ".jpg"),
    "jpeg": ("JPEG", ".jpg"),
    "webp": ("WEBP", ".webp"),
    "bmp": ("BMP", ".bmp"),
    "tif": ("TIFF", ".tif"),
    "tiff": ("TIFF", ".tif"),
}

#: Lossy formats get a high quality: the point of the output is G's degradation,
#: not the encoder's.
LOSSY_QUALITY = 95

#: Images whose LR side exceeds this many pixels are run through G in tiles by
#: default. Tiling is exact (see :func:`generate_tiled`), so this only bounds
#: memory: one 64-channel fp32 activation of a 1024x1024 tile is 256 MiB.
DEFAULT_TILE = 1024

#: Upper bound on LR pixels per batch, so a batch of large images stays within memory.
BATCH_PIXEL_BUDGET = 2**20


@dataclass
class FolderSummary(RunSummary):
    """What a folder run (``degrade``, ``pairs``) did, over all processes when several ran: the shared
    summary plus the modes converted to 8-bit RGB, the throughput and where it ran."""

    converted_modes: dict[str, int] = field(default_factory=dict)
    images_per_second: float = 0.0
    scale: int = 1
    device: str = "cpu"
    processes: int = 1


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    src: Path
    dest: Path
    rel: str = ""  # path relative to the input folder: seeds this image's noise input, if G takes one
    hr_dest: Path | None = None  # ``pairs``: where the (cropped, cleaned) HR goes, written before the LR

    def done(self) -> bool:
        """Whether every output of this job exists (HR first, LR last: LR present means the pair is complete)."""
        return self.dest.exists() and (self.hr_dest is None or self.hr_dest.exists())


@dataclass
class Settings:
    """Resolved run settings (device-dependent defaults filled in)."""

    scale: int
    fmt: str
    suffix: str
    batch_size: int
    workers: int
    tile: int | None
    encoder_threads: int
    precision: str
    channels_last: bool


def output_format(fmt: str) -> tuple[str, str]:
    """(PIL format, suffix) for a ``--format`` value; a usage error for unknown ones."""
    key = fmt.lower().lstrip(".")
    if key not in FORMATS:
        raise DsganError(f"unknown output format {fmt!r}; choose one of {', '.join(sorted(FORMATS))}", EXIT_USAGE)
    return FORMATS[key]



# --------------------------------------------------------------------------- input side


def pair_hr(x: torch.Tensor, scale: int, cleanup_factor: int) -> torch.Tensor:
    """The HR of a training pair from one (1, 3, H, W) image: cleaned up (downscaled by ``cleanup_factor`` and
    quantised to 8 bits, as the trainer will read it), then cropped at the bottom/right to a multiple of ``scale``."""
    if cleanup_factor > 1:
        x = image_to_tensor(to_uint8(downscale(x, cleanup_factor)[0]).numpy()).unsqueeze(0)
    h, w = x.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"too small: {w}x{h} after clean-up is smaller than the scale {scale}")
    return x[:, :, : h - h % scale, : w - w % scale]


class DecodeDataset(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, Xb or None, converted_from_mode, error_reason, HR uint8 or None)``; never raises for bad files.

    With ``pairs`` the image is first made into a pair's HR (:func:`pair_hr`), returned as uint8 (H, W, 3).
    """

    def __init__(self, sources: list[Path], scale: int, pairs: bool = False, cleanup_factor: int = 1):
        self.sources = sources
        self.scale = scale
        self.pairs = pairs
        self.cleanup_factor = cleanup_factor

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, str | None, torch.Tensor | None]:
        try:
            img, mode = load_rgb(self.sources[i])
            x = image_to_tensor(img).unsqueeze(0)
            hr = pair_hr(x, self.scale, self.cleanup_factor) if self.pairs else None
        except ImageReadError as e:
            return i, None, None, e.reason, None
        except OSError as e:  # e.g. a file vanished between listing and reading
            return i, None, None, e.strerror or str(e), None
        except ValueError as e:  # too small for the scale
            return i, None, None, str(e), None
        if hr is not None:
            x = hr
        return i, downscale(x, self.scale)[0].contiguous(), mode, None, None if hr is None else to_uint8(hr[0])


def _first(sample):
    """Collate for ``batch_size=None``: pass the sample through unchanged."""
    return sample


def _in_thread(make_iter, depth: int, name: str = "dsgan-input") -> Iterator[Any]:
    """Yield the items of ``make_iter()``, produced by a background thread up to ``depth`` ahead.

    Closing the generator (or an error on either side) stops the thread and
    waits for it, so no input thread outlives the run.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        # A timeout, not a plain put: a consumer that stopped never frees a slot.
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.05)
                return True
        return False

    def produce() -> None:
        items = None
        try:
            items = make_iter()
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(e)
        finally:
            getattr(items, "close", lambda: None)()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join()


def iter_decoded(dataset: DecodeDataset, workers: int, depth: int) -> Iterator[Any]:
    """Decoded items in order: from DataLoader worker processes, or in the calling thread when ``workers == 0``."""
    if workers <= 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
        prefetch_factor=max(2, math.ceil(depth / workers)), persistent_workers=False,
    )
    it = iter(loader)
    try:
        yield from it
    finally:
        getattr(it, "_shutdown_workers", lambda: None)()  # stop the worker processes now, not when collected


def iter_batches(items: Iterator[Any], batch_size: int, tile: int | None, channels_last: bool) -> Iterator[tuple]:
    """Group decoded items into same-size batches.

    Yields ``("failed", i, reason)``, ``("mode", mode)``, ``("tiled", [i], x, [hr])``
    for an image larger than ``tile``, and ``("batch", indices, x, hrs)`` with
    ``x`` stacked (and channels_last when asked), ready for G; ``hrs`` are the
    pairs' HR images (None for ``degrade``).
    """
    buckets: dict[tuple[int, int], list[tuple[int, torch.Tensor, torch.Tensor | None]]] = {}

    def flush(key: tuple[int, int]) -> tuple:
        group = buckets.pop(key)
        x = torch.stack([x for _, x, _ in group])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return "batch", [i for i, _, _ in group], x, [hr for _, _, hr in group]

    for i, x, mode, err, hr in items:
        if err is not None:
            yield "failed", i, err
            continue
        if mode:
            yield "mode", mode
        h, w = x.shape[-2:]
        if tile and (h > tile or w > tile):
            yield "tiled", [i], x.unsqueeze(0), [hr]
            continue
        bucket = buckets.setdefault((h, w), [])
        bucket.append((i, x, hr))
        if len(bucket) >= max(1, min(batch_size, BATCH_PIXEL_BUDGET // (h * w))):
            yield flush((h, w))
        elif sum(len(b) for b in buckets.values()) > 4 * batch_size:
            # Many distinct sizes: run the fullest partial batch rather than hoard images.
            yield flush(max(buckets, key=lambda k: len(buckets[k])))
    for key in list(buckets):
        yield flush(key)


# --------------------------------------------------------------------------- the generator


def _autocast(device: torch.device, precision: str):
    """Autocast context for ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def image_noise(generator: Generator, x: torch.Tensor, keys: list[str], seed: int) -> torch.Tensor | None:
    """G's noise input for a batch: one map per image, seeded by (seed, image key), so an image's
    output depends neither on its batch nor on tiling, and a rerun reproduces it."""
    if not generator.noise_dim:
        return None
    # torch's CPU generator keeps 32 bits of a seed: hash (seed, key) down to 32 bits, not seed * 2**32 + key.
    # surrogateescape: a file name that is not valid UTF-8 still has bytes to seed from (its own).
    seeds = [zlib.crc32(f"{seed}/{k}".encode("utf-8", "surrogateescape")) for k in keys]
    maps = [generator.make_noise(x[i:i + 1].cpu(), torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)]
    return torch.cat(maps)


def run_generator(generator: torch.nn.Module, x: torch.Tensor, device: torch.device,
                  precision: str = "fp32", channels_last: bool = True, noise: torch.Tensor | None = None,
                  origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """G(x) for a (N, 3, h, w) batch, on ``device``; returns float32 on ``device``."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noise is not None:
        noise = noise.to(device, non_blocking=True)
    with torch.inference_mode(), _autocast(device, precision):
        return generator(x, noise, origin=origin).float()


def generate_tiled(generator: Generator, x: torch.Tensor, tile: int, device: torch.device,
                   precision: str = "fp32", channels_last: bool = True, margin: int | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """G(x) for one (1, 3, h, w) image computed in overlapping tiles; equals G on the whole image.

    Each ``tile`` x ``tile`` core is computed from an input window extended
    by ``margin`` pixels on every side (clipped at the image border). With
    ``margin >= generator.receptive_radius`` (one pixel per 3x3 conv), every
    kept output pixel sees exactly the input it would see in a whole-image
    pass, including the padding at the true image border; the tile-edge
    padding only touches the discarded margin. A noise input is cut from the
    whole image's ``noise`` map the same way, and G is told each window's
    origin (a block grid stays the whole image's). Returns float32 on the CPU.
    """
    if margin is None:
        margin = generator.receptive_radius
    _, c, h, w = x.shape
    out = torch.empty((1, c, h, w), dtype=torch.float32)
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        a0, a1 = max(0, y0 - margin), min(h, y1 + margin)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            b0, b1 = max(0, x0 - margin), min(w, x1 + margin)
            z = noise[:, :, a0:a1, b0:b1] if noise is not None else None
            y = run_generator(generator, x[:, :, a0:a1, b0:b1], device, precision, channels_last, z, origin=(a0, b0))
            out[:, :, y0:y1, x0:x1] = y[:, :, y0 - a0:y1 - a0, x0 - b0:x1 - b0].cpu()
    return out


#: Smallest tile tried after out-of-memory errors before the run gives up.
MIN_OOM_TILE = 32


def _is_oom(e: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA raises OutOfMemoryError, other backends a RuntimeError)."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def generate_fitting(generator: Generator, x: torch.Tensor, device: torch.device, settings: Settings,
                     noise: torch.Tensor | None = None, tile: int | None = None) -> torch.Tensor:
    """G(x) for a batch (or, with ``tile``, one image in tiles); on out-of-memory, the same in smaller pieces.

    A batch is split in halves, one image is tiled, and tiles are halved down
    to :data:`MIN_OOM_TILE`. Noise is per image and tiling sees the same
    input (see :func:`generate_tiled`), so a fallback changes the memory use,
    not the output (beyond float summation order). Returns float32 on
    ``device`` or the CPU.
    """
    while True:
        try:
            if tile:
                return generate_tiled(generator, x, tile, device, settings.precision, settings.channels_last, noise=noise)
            return run_generator(generator, x, device, settings.precision, settings.channels_last, noise)
        except RuntimeError as e:  # left before retrying, so the failed attempt's tensors are freed
            if not _is_oom(e):
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        n = len(x)
        if n > 1:
            halves = (slice(0, n // 2), slice(n // 2, n))
            return torch.cat([generate_fitting(generator, x[h], device, settings, None if noise is None else noise[h]).cpu()
                              for h in halves])
        tile = (tile or max(x.shape[-2:])) // 2
        if tile < MIN_OOM_TILE:
            hint = "free memory and run again" if device.type == "cpu" else "free memory on the device, or run on the CPU (--cpu)"
            raise DsganError(f"out of memory on {device} even for one image in {tile * 2}-pixel tiles; {hint}", EXIT_USAGE)


# --------------------------------------------------------------------------- output side


class Writer:
    """Encodes and atomically writes outputs on a thread pool, with bounded backlog."""

    def __init__(self, pil_format: str, threads: int, max_pending: int, on_done):
        self.pil_format = pil_format
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dsgan-encode")
        self.pending: deque[Future] = deque()
        self.max_pending = max(1, max_pending)
        self.on_done = on_done
        self.params = {"quality": LOSSY_QUALITY} if pil_format in ("JPEG", "WEBP") else {}
        self.encode_seconds = 0.0
        self._lock = threading.Lock()

    def _write(self, arr: torch.Tensor, job: Job, hr: torch.Tensor | None) -> tuple[Job, str | None]:
        """Encode one image (uint8 HWC, or float CHW in [0, 1]) and write it, after the pair's HR when given;
        returns the job and an error or None."""
        from PIL import Image

        t = time.perf_counter()
        dest = job.dest  # the file being written, named in an error (a pair's HR, then its LR)
        try:
            if hr is not None:
                dest = job.hr_dest
                save_image_atomic(Image.fromarray(hr.numpy(), "RGB"), dest, format=self.pil_format, **self.params)
                dest = job.dest
            if arr.dtype != torch.uint8:
                arr = to_uint8(arr)
            save_image_atomic(Image.fromarray(arr.numpy(), "RGB"), dest, format=self.pil_format, **self.params)
            err = None
        except OSError as e:
            err = f"cannot write {dest} ({e.strerror or e})"
        except DsganError as e:  # e.g. the output path is a symlink or FIFO (writes.refuse_special)
            err = str(e)
        except Exception as e:  # noqa: BLE001 - one bad output must not stop the run
            err = f"cannot encode {dest} ({e})"
        with self._lock:
            self.encode_seconds += time.perf_counter() - t
        return job, err

    def submit(self, arr, job: Job, hr: torch.Tensor | None = None) -> None:
        """Queue one output (and its pair's HR); blocks while the backlog is full."""
        while len(self.pending) >= self.max_pending:
            self._collect(self.pending.popleft())
        self.pending.append(self.pool.submit(self._write, arr, job, hr))

    def _collect(self, fut: Future) -> None:
        job, err = fut.result()
        self.on_done(job, err)

    def close(self) -> None:
        """Wait for every queued write."""
        while self.pending:
            self._collect(self.pending.popleft())
        self.pool.shutdown(wait=True)

    def cancel(self) -> None:
        """Drop the queued writes and wait for the ones under way (each completes or removes its temp file)."""
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- defaults


def check_options(batch_size: int | None, workers: int | None, tile: int | None, precision: str | None) -> None:
    """Usage errors in the tuning options (None means "default"), raised before anything is created."""
    if batch_size is not None and batch_size < 1:
        raise DsganError(f"--batch-size must be at least 1, got {batch_size}", EXIT_USAGE)
    if workers is not None and workers < 0:
        raise DsganError(f"--workers must be 0 or more, got {workers}", EXIT_USAGE)
    if tile is not None and tile < 0:
        raise DsganError(f"--tile must be 0 (off) or a positive size, got {tile}", EXIT_USAGE)
    if (precision or "fp32") not in ("fp32", "bf16", "fp16"):
        raise DsganError(f"--precision must be fp32, bf16 or fp16, got {precision!r}", EXIT_USAGE)


def default_settings(device: torch.device, *, scale: int, fmt: str, batch_size: int | None, workers: int | None,
                     tile: int | None, encoder_threads: int | None, precision: str | None,
                     channels_last: bool | None, num_processes: int = 1) -> Settings:
    """Fill in device-dependent defaults (measured by scripts/bench_degrade.py)."""
    pil_format, suffix = output_format(fmt)
    check_options(batch_size, workers, tile, precision)
    cuda = device.type == "cuda"
    cpus = max(1, (os.cpu_count() or 1) // max(1, num_processes))
    if batch_size is None:
        batch_size = 16 if cuda else 8
    if workers is None:
        # On a CPU the generator needs every core; one decode thread keeps up
        # with it (decoding is ~1% of G's time) without worker processes
        # competing with the intra-op threads. A GPU is fed by CPU workers.
        workers = min(8, cpus) if cuda else 0
    if tile is None:
        tile = DEFAULT_TILE
    if encoder_threads is None:
        encoder_threads = min(4, cpus) if cuda else 1
    precision = precision or "fp32"
    if channels_last is None:
        channels_last = True
    return Settings(scale=scale, fmt=pil_format, suffix=suffix, batch_size=batch_size, workers=workers,
                    tile=tile or None, encoder_threads=encoder_threads, precision=precision, channels_last=channels_last)


# --------------------------------------------------------------------------- the run


def for_the_encoder(y: torch.Tensor) -> torch.Tensor:
    """G's output as the encoder threads take it. On a GPU, rounded there, moving a quarter of the bytes; on a
    CPU, left as it is for each encoder thread to round: small ops on the main thread pay for a full
    intra-op thread team (tens of ms on a busy machine)."""
    return to_uint8(y).cpu() if y.device.type != "cpu" else y


def job_batches(jobs: list[Job], settings: Settings, pairs: bool, cleanup_factor: int) -> Iterator[tuple]:
    """The events of decoding ``jobs`` into batches (see :func:`iter_batches`)."""
    dataset = DecodeDataset([j.src for j in jobs], settings.scale, pairs, cleanup_factor)
    decoded = iter_decoded(dataset, settings.workers, depth=2 * settings.batch_size)
    return iter_batches(decoded, settings.batch_size, settings.tile, settings.channels_last)


def process_jobs(jobs: list[Job], generator: Generator, device: torch.device, settings: Settings, *,
                 progress: bool = True, label: str = "degrading", stats: dict[str, float] | None = None,
                 seed: int = 0, pairs: bool = False, cleanup_factor: int = 1) -> FolderSummary:
    """Run G over ``jobs`` (already filtered for skips) and return this process's summary.

    An image G fails on (e.g. smaller than a reflect padding allows) fails alone: its batch is rerun one
    image at a time and the others are written.

    On any error the input thread is stopped and the encoder threads are
    joined before it propagates: nothing keeps running or writing.
    """
    summary = FolderSummary()
    modes: Counter[str] = Counter()
    lock = threading.Lock()
    stats = stats if stats is not None else {}
    stats.update(wait_input=0.0, generator=0.0, to_uint8=0.0)
    with progress_bar(progress) as bar:
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
            noise = image_noise(generator, x, [jobs[i].rel for i in indices], seed)
            try:
                y = generate_fitting(generator, x, device, settings, noise, settings.tile if tiled else None)
            except (RuntimeError, ValueError) as e:
                if _is_oom(e):
                    raise
                if len(indices) > 1:  # find the image at fault; the rest of the batch is written
                    for k in range(len(indices)):
                        generate(x[k:k + 1], indices[k:k + 1], hrs[k:k + 1], tiled)
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
        # Decoding, downscaling, bucketing and stacking all run on one input
        # thread (fed by worker processes when workers > 0), two batches ahead.
        events = _in_thread(lambda: job_batches(jobs, settings, pairs, cleanup_factor), depth=2)
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
            stem = entry[:-len(".partial")] if entry.endswith(".partial") else ""
            if any(stem.startswith(p) and "." not in stem[len(p):] for p in prefixes):
                with contextlib.suppress(OSError):
                    writes.remove_own(folder / entry)
                    removed += 1
    return removed



@dataclass(frozen=True)
class RunOptions:
    """How G runs over a folder: the options ``degrade`` and ``pairs`` share (None: the device's default, see
    :func:`default_settings`). ``stats``, when given, receives this process's per-stage seconds."""

    fmt: str = "png"
    cpu: bool = False
    tile: int | None = None
    batch_size: int | None = None
    workers: int | None = None
    precision: str | None = None
    encoder_threads: int | None = None
    channels_last: bool | None = None
    progress: bool = True
    seed: int = 0
    stats: dict[str, float] | None = None


def run_jobs(jobs: list[Job], generator: Generator, scale: int, opts: RunOptions, *, overwrite: bool,
             label: str = "degrading", cleanup_factor: int | None = None,
             on_start: Callable[[], None] | None = None) -> tuple[FolderSummary, bool]:
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
    settings = default_settings(device, scale=scale, fmt=opts.fmt, batch_size=opts.batch_size, workers=opts.workers,
                                tile=opts.tile, encoder_threads=opts.encoder_threads, precision=opts.precision,
                                channels_last=opts.channels_last, num_processes=accelerator.num_processes)
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
    part = process_jobs(todo, generator, device, settings, progress=opts.progress and accelerator.is_main_process,
                        label=label, stats=opts.stats, seed=opts.seed, pairs=cleanup_factor is not None,
                        cleanup_factor=cleanup_factor or 1)
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
