"""What the readings of the real LR and the noise-level term share: which images of a set are read, and the finest
diagonal detail they read grain from. Imports nothing of the package, so that every module may use it."""

from __future__ import annotations

import torch


def spread(n: int, most: int) -> list[int]:
    """Indices of an even spread of at most ``most`` of ``n`` images."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique().tolist()


def diagonal_detail(x: torch.Tensor) -> torch.Tensor:
    """The finest diagonal Haar detail (x[i,j] - x[i,j+1] - x[i+1,j] + x[i+1,j+1]) / 2: white noise of std s
    has std s there, smooth content almost none."""
    return (x[..., :-1, :-1] - x[..., :-1, 1:] - x[..., 1:, :-1] + x[..., 1:, 1:]) / 2
