"""Training data: unpaired HR and real-LR image sets, decoded once, sampled as a function of the step.

Choice: every image is decoded ONCE, up front, into a uint8 tensor held in RAM
(aligned faces are small: a 256x256 HR face is 192 KiB, 10,000 of them 1.9 GiB).
After that a training batch is pure tensor indexing, cropping and flipping,
which DataLoader workers do while the model trains.

Sampling is a deterministic function of ``(seed, micro-batch index, rank)``:
sample position ``p`` of a stream is image ``perm_e[p mod N]`` where ``perm_e``
is a seeded shuffle for epoch ``e = p // N``. Each set is shuffled
independently (the pairs are never fixed), every image is seen once per epoch,
and resuming at step ``s`` needs nothing but ``s``: there is no sampler state
to save.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..plumbing.errors import DsganError, file_error
from .images import decode_square, require_images

#: Seed offsets that keep the HR order, the LR order and the augmentations independent.
_STREAM_HR, _STREAM_LR, _STREAM_AUG = 1, 2, 3


@dataclass
class ImageSet:
    """A decoded image set: ``images`` is uint8 (N, 3, S, S); ``skipped`` lists unreadable files."""

    images: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    resized: int = 0


def load_image_set(folder: str | Path, size: int, *, what: str, resize: bool = False,
                   workers: int = 2, progress=None) -> ImageSet:
    """Decode every image under ``folder`` into a uint8 tensor (N, 3, size, size).

    Unreadable files are skipped with a warning and counted; a wrong size is
    an error naming the file unless ``resize``. ``progress`` is an optional
    callable ``advance(n)`` for a progress bar.
    """
    paths = require_images(folder, what)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    resized = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # PIL releases the GIL while decoding, so threads give real parallelism here.
        for path, (arr, reason, was_resized) in zip(paths, pool.map(lambda p: decode_square(p, size, resize, what), paths)):
            if progress is not None:
                progress(1)
            if arr is None:
                skipped.append((path, reason or "unreadable"))
                continue
            out[len(kept)] = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
            kept.append(path)
            resized += was_resized
    for path, reason in skipped[:5]:
        print(f"warning: skipping unreadable {what} image {path}: {reason}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"warning: {len(skipped) - 5} more unreadable {what} images skipped", file=sys.stderr)
    if not kept:
        raise file_error(folder, f"none of the {len(paths)} {what} images could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    return ImageSet(images=out[: len(kept)].clone() if len(kept) < len(paths) else out, paths=kept,
                    skipped=skipped, resized=resized)


def _seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of non-negative ints (stable across runs and machines)."""
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(s)


def stream_indices(n: int, start: int, count: int, seed: int, stream: int) -> torch.Tensor:
    """Images at positions ``start .. start+count-1`` of a shuffled-per-epoch stream over ``n`` images."""
    pos = torch.arange(start, start + count)
    epochs = pos // n
    out = torch.empty(count, dtype=torch.long)
    for e in epochs.unique().tolist():
        perm = torch.randperm(n, generator=_seeded(seed, stream, e))
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batch ``m`` of rank ``rank``: (HR uint8 (B,3,H,W), real LR uint8 (B,3,h,w)).

    Indexed by the global micro-batch number, so a DataLoader over
    ``range(start, stop)`` resumes exactly where a run stopped.
    """

    def __init__(self, hr: torch.Tensor, lr: torch.Tensor, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, scale: int = 2, crop_size: int = 0, flip: bool = False, grid: int = 0):
        self.hr, self.lr = hr, lr
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.scale, self.crop_size, self.flip, self.grid = scale, crop_size, flip, grid

    def __len__(self) -> int:
        return 2**62  # indexed by step; the loop decides where to stop

    def __getitem__(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batch_size
        start = (m * self.world_size + self.rank) * b
        hr = self.hr[stream_indices(len(self.hr), start, b, self.seed, _STREAM_HR)]
        lr = self.lr[stream_indices(len(self.lr), start, b, self.seed, _STREAM_LR)]
        if self.crop_size or self.flip:
            g = _seeded(self.seed, _STREAM_AUG, m, self.rank)
            hr, lr = self._augment(hr, lr, g)
        return hr, lr

    def _augment(self, hr: torch.Tensor, lr: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops (HR crop aligned to the scale so Xb is a crop of the full Xb) and flips.

        With a block ``grid`` (model.grid_period), every crop starts on it, so that each crop's grid lies where
        G and D are told it does, and real LR images are not flipped (that would move their grid)."""
        step = max(self.grid, 1)
        if self.crop_size:
            c, s = self.crop_size, self.scale
            hr = torch.stack([_crop(x, c * s, g, step=s * step) for x in hr])
            lr = torch.stack([_crop(x, c, g, step=step) for x in lr])
        if self.flip:
            fh = torch.rand(len(hr), generator=g) < 0.5
            fl = torch.rand(len(lr), generator=g) < 0.5
            hr = torch.where(fh[:, None, None, None], hr.flip(-1), hr)
            if not self.grid:
                lr = torch.where(fl[:, None, None, None], lr.flip(-1), lr)
        return hr.contiguous(), lr.contiguous()


def _crop(x: torch.Tensor, size: int, g: torch.Generator, step: int = 1) -> torch.Tensor:
    """Random ``size`` x ``size`` crop of (3, H, W) with offsets on multiples of ``step``."""
    h, w = x.shape[-2:]
    top = int(torch.randint(0, (h - size) // step + 1, (1,), generator=g)) * step
    left = int(torch.randint(0, (w - size) // step + 1, (1,), generator=g)) * step
    return x[:, top: top + size, left: left + size]


def make_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader yielding micro-batches ``start .. stop-1`` in order (workers prefetch ahead)."""
    return torch.utils.data.DataLoader(
        dataset, sampler=range(start, stop), batch_size=None, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=False, prefetch_factor=4 if num_workers else None,
    )


def check_data_dirs(hr_dir: str | Path, lr_dir: str | Path, hr_size: int | None = None, lr_size: int | None = None) -> None:
    """Refuse missing or identical HR and LR folders; a missing one names the ``prepare`` command that makes it."""
    for key, folder, size, raw in (("hr_dir", hr_dir, hr_size, "RAW_CLEAN_PHOTOS"), ("lr_dir", lr_dir, lr_size, "RAW_REAL_PHOTOS")):
        if not Path(folder).exists():
            how = f"dsgan prepare {raw} --out {folder}" + (f" --size {size}" if size else "")
            raise DsganError(f"{folder}: no such folder (data.{key}); make it with `{how}`, or set data.{key}")
    if Path(hr_dir).resolve() == Path(lr_dir).resolve():
        raise DsganError(f"{hr_dir}: data.hr_dir and data.lr_dir are the same folder; DSGAN needs clean HR and real LR sets")
