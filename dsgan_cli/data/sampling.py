"""Training batches: the decoded HR and real-LR sets (:mod:`.sets`) sampled as a function of the step.

A training batch is pure tensor indexing, cropping and flipping of the sets
decoded once up front, which DataLoader workers do while the model trains.

Sampling is a deterministic function of ``(seed, micro-batch index, rank)``:
sample position ``p`` of a stream is image ``perm_e[p mod N]`` where ``perm_e``
is a seeded shuffle for epoch ``e = p // N``. Each set is shuffled
independently (the pairs are never fixed), every image is seen once per epoch,
and resuming at step ``s`` needs nothing but ``s``: there is no sampler state
to save.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

#: Seed offsets that keep the HR order, the LR order and the augmentations independent.
_STREAM_HR, _STREAM_LR, _STREAM_AUG, _STREAM_GRID = 1, 2, 3, 4


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


@dataclass(frozen=True)
class Crops:
    """How the images of a micro-batch are cut: ``scale`` (HR side / LR side), ``crop_size`` (the crops' LR side;
    0: whole images), random horizontal ``flip``, and the block ``grid`` (model.grid_period; 0: none) crops start on."""

    scale: int = 2
    crop_size: int = 0
    flip: bool = False
    grid: int = 0


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batch ``m`` of rank ``rank``: (HR uint8 (B,3,H,W), real LR uint8 (B,3,h,w)).

    Indexed by the global micro-batch number, so a DataLoader over
    ``range(start, stop)`` resumes exactly where a run stopped.
    """

    def __init__(self, hr: torch.Tensor, lr: torch.Tensor, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, crops: Crops = Crops(), **crop_fields):
        """``crop_fields`` override fields of ``crops`` by name (``scale=2, crop_size=32``), as the trainer passes them."""
        self.hr, self.lr = hr, lr
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        crops = replace(crops, **crop_fields)
        self.scale, self.crop_size, self.flip, self.grid = crops.scale, crops.crop_size, crops.flip, crops.grid

    def __len__(self) -> int:
        return 2**62  # indexed by step; the loop decides where to stop

    def __getitem__(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.batch_size
        start = (m * self.world_size + self.rank) * b
        hr = self.hr[stream_indices(len(self.hr), start, b, self.seed, _STREAM_HR)]
        lr = self.lr[stream_indices(len(self.lr), start, b, self.seed, _STREAM_LR)]
        if self.crop_size or self.flip:
            g = _seeded(self.seed, _STREAM_AUG, m, self.rank)
            hr, lr = self._augment(hr, lr, g, self.grid_phase(m))
        return hr, lr

    def grid_phase(self, m: int) -> tuple[int, int]:
        """Where micro-batch ``m``'s crops start on the block grid (model.grid_period), the same for Xb and real LR.

        Drawn per micro-batch, so that a crop's position on the grid says nothing about its distance to the
        crop's border (with crops always starting on the grid, G learned border effects as a periodic pattern).
        (0, 0) without a grid or crops."""
        if not (self.grid and self.crop_size):
            return 0, 0
        room = min(self.hr.shape[-2] // self.scale, self.hr.shape[-1] // self.scale,
                   self.lr.shape[-2], self.lr.shape[-1]) - self.crop_size
        g = _seeded(self.seed, _STREAM_GRID, m, self.rank)
        oy, ox = torch.randint(0, min(self.grid - 1, room) + 1, (2,), generator=g).tolist()
        return oy, ox

    def _augment(self, hr: torch.Tensor, lr: torch.Tensor, g: torch.Generator,
                 phase: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops (HR crop aligned to the scale so Xb is a crop of the full Xb) and flips.

        With a block ``grid`` (model.grid_period), every crop starts ``phase`` pixels past a grid line, so that
        each crop's grid lies where G and D are told it does, and real LR images are not flipped (that
        would move their grid)."""
        step = max(self.grid, 1)
        if self.crop_size:
            c, s = self.crop_size, self.scale
            hr = torch.stack([_crop(x, c * s, g, step=s * step, first=(s * phase[0], s * phase[1])) for x in hr])
            lr = torch.stack([_crop(x, c, g, step=step, first=phase) for x in lr])
        if self.flip:
            fh = torch.rand(len(hr), generator=g) < 0.5
            fl = torch.rand(len(lr), generator=g) < 0.5
            hr = torch.where(fh[:, None, None, None], hr.flip(-1), hr)
            if not self.grid:
                lr = torch.where(fl[:, None, None, None], lr.flip(-1), lr)
        return hr.contiguous(), lr.contiguous()


def _crop(x: torch.Tensor, size: int, g: torch.Generator, step: int = 1, first: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Random ``size`` x ``size`` crop of (3, H, W) with offsets ``first`` + multiples of ``step``."""
    h, w = x.shape[-2:]
    top = first[0] + int(torch.randint(0, (h - size - first[0]) // step + 1, (1,), generator=g)) * step
    left = first[1] + int(torch.randint(0, (w - size - first[1]) // step + 1, (1,), generator=g)) * step
    return x[:, top: top + size, left: left + size]


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: leave Ctrl-C and SIGTERM to the training process, which finishes its step (it
    needs the workers for that) and then shuts them down; a worker whose parent dies exits by itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader yielding micro-batches ``start .. stop-1`` in order (workers prefetch ahead)."""
    return torch.utils.data.DataLoader(
        dataset, sampler=range(start, stop), batch_size=None, num_workers=num_workers,
        pin_memory=pin_memory, persistent_workers=False, prefetch_factor=4 if num_workers else None,
        worker_init_fn=ignore_stop_signals if num_workers else None,
    )
