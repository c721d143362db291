"""How G runs over a folder: the options ``degrade`` and ``pairs`` share (:class:`RunOptions`), their usage checks,
and the settings they resolve to on a device (:class:`Settings`, defaults measured by scripts/bench_degrade.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..plumbing.errors import EXIT_USAGE, DsganError

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

#: Images whose LR side exceeds this many pixels are run through G in tiles by
#: default. Tiling is exact (see :func:`dsgan_cli.engines.generate.generate_tiled`), so this only bounds
#: memory: one 64-channel fp32 activation of a 1024x1024 tile is 256 MiB.
DEFAULT_TILE = 1024


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


def default_settings(device: torch.device, scale: int, opts: RunOptions, num_processes: int = 1) -> Settings:
    """``opts`` with device-dependent defaults filled in (measured by scripts/bench_degrade.py)."""
    pil_format, suffix = output_format(opts.fmt)
    check_options(opts.batch_size, opts.workers, opts.tile, opts.precision)
    cuda = device.type == "cuda"
    cpus = max(1, (os.cpu_count() or 1) // max(1, num_processes))
    batch_size = opts.batch_size if opts.batch_size is not None else (16 if cuda else 8)
    workers = opts.workers
    if workers is None:
        # On a CPU the generator needs every core; one decode thread keeps up
        # with it (decoding is ~1% of G's time) without worker processes
        # competing with the intra-op threads. A GPU is fed by CPU workers.
        workers = min(8, cpus) if cuda else 0
    tile = opts.tile if opts.tile is not None else DEFAULT_TILE
    encoder_threads = opts.encoder_threads
    if encoder_threads is None:
        encoder_threads = min(4, cpus) if cuda else 1
    return Settings(
        scale=scale,
        fmt=pil_format,
        suffix=suffix,
        batch_size=batch_size,
        workers=workers,
        tile=tile or None,
        encoder_threads=encoder_threads,
        precision=opts.precision or "fp32",
        channels_last=True if opts.channels_last is None else opts.channels_last,
    )
