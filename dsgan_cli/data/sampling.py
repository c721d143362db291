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

from dataclasses import dataclass

import torch

#: Seed offsets that keep the HR order, the LR order and the augmentations independent.
_STREAM_HR, _STREAM_LR, _STREAM_AUG = 1, 2, 3


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
    0: whole images) and random horizontal ``flip`` of the HR images."""

    scale: int = 2
    crop_size: int = 0
    flip: bool = False


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batch ``m`` of rank ``rank``: (HR uint8 (B,3,H,W), real LR uint8 (B,3,h,w)).

    Indexed by the global micro-batch number, so a DataLoader over
    ``range(start, stop)`` resumes exactly where a run stopped.
    """

    def __init__(
        self, hr: torch.Tensor, lr: torch.Tensor, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, crops: Crops = Crops()
    ):
        self.hr, self.lr = hr, lr
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.scale, self.crop_size, self.flip = crops.scale, crops.crop_size, crops.flip

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
        """Random crops (HR crop aligned to the scale so Xb is a crop of the full Xb) and flips of the HR.

        Real LR images are never flipped: a mirrored real photo carries a mirrored degradation (a motion blur's
        direction, an anisotropic lens blur, a Bayer phase, a codec's block grid), and D would see the mixture
        of both, which G can only meet with a blur that has neither's orientation."""
        if self.crop_size:
            c, s = self.crop_size, self.scale
            hr = torch.stack([_crop(x, c * s, g, step=s) for x in hr])
            lr = torch.stack([_crop(x, c, g) for x in lr])
        if self.flip:
            fh = torch.rand(len(hr), generator=g) < 0.5
            hr = torch.where(fh[:, None, None, None], hr.flip(-1), hr)
        return hr.contiguous(), lr.contiguous()


def _crop(x: torch.Tensor, size: int, g: torch.Generator, step: int = 1) -> torch.Tensor:
    """Random ``size`` x ``size`` crop of (3, H, W) with offsets at multiples of ``step``."""
    h, w = x.shape[-2:]
    top = int(torch.randint(0, (h - size) // step + 1, (1,), generator=g)) * step
    left = int(torch.randint(0, (w - size) // step + 1, (1,), generator=g)) * step
    return x[:, top : top + size, left : left + size]


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: leave Ctrl-C and SIGTERM to the training process, which finishes its step (it
    needs the workers for that) and then shuts them down; a worker whose parent dies exits by itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: MicroBatches, start: int, stop: int, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader yielding micro-batches ``start .. stop-1`` in order (workers prefetch ahead)."""
    return torch.utils.data.DataLoader(
        dataset,
        sampler=range(start, stop),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=ignore_stop_signals if num_workers else None,
    )
