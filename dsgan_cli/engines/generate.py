"""G applied to a batch: under ``torch.inference_mode`` with autocast, each image's noise input seeded from
(seed, its key), large images in exact tiles, and on out-of-memory the same work in smaller pieces."""

from __future__ import annotations

import contextlib
import zlib

import torch

from ..method.models import Generator
from ..plumbing.errors import EXIT_USAGE, DsganError
from .run_settings import Settings


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
    maps = [generator.make_noise(x[i : i + 1].cpu(), torch.Generator().manual_seed(s)) for i, s in enumerate(seeds)]
    return torch.cat(maps)


def run_generator(
    generator: torch.nn.Module,
    x: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = True,
    noise: torch.Tensor | None = None,
    origin: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """G(x) for a (N, 3, h, w) batch, on ``device``; returns float32 on ``device``."""
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noise is not None:
        noise = noise.to(device, non_blocking=True)
    with torch.inference_mode(), _autocast(device, precision):
        return generator(x, noise, origin=origin).float()


def generate_tiled(
    generator: Generator,
    x: torch.Tensor,
    tile: int,
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = True,
    margin: int | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
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
            out[:, :, y0:y1, x0:x1] = y[:, :, y0 - a0 : y1 - a0, x0 - b0 : x1 - b0].cpu()
    return out


#: Smallest tile tried after out-of-memory errors before the run gives up.
MIN_OOM_TILE = 32


def is_oom(e: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA raises OutOfMemoryError, other backends a RuntimeError)."""
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def generate_fitting(
    generator: Generator,
    x: torch.Tensor,
    device: torch.device,
    settings: Settings,
    noise: torch.Tensor | None = None,
    tile: int | None = None,
) -> torch.Tensor:
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
            if not is_oom(e):
                raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        n = len(x)
        if n > 1:
            halves = (slice(0, n // 2), slice(n // 2, n))
            return torch.cat(
                [generate_fitting(generator, x[h], device, settings, None if noise is None else noise[h]).cpu() for h in halves]
            )
        tile = (tile or max(x.shape[-2:])) // 2
        if tile < MIN_OOM_TILE:
            hint = "free memory and run again" if device.type == "cpu" else "free memory on the device, or run on the CPU (--cpu)"
            raise DsganError(f"out of memory on {device} even for one image in {tile * 2}-pixel tiles; {hint}", EXIT_USAGE)
