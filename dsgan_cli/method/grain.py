"""Whether the real LR carry grain, read off the images before training (as G's JPEG quality is).

A G with output noise always adds some grain, and the noise-level term (and the GAN) meet a real set whose
photos hold more fine detail than the clean ones with more grain: on JPEG or blur alone G added grain the real
photos lack, and SR trained on its pairs fell below bicubic pairs (BENCHMARKS.md). Where a photo is flat
(backgrounds, skin) only grain is left in its finest detail, and there a real set without grain reads no more
than the clean Xb G starts from: blur and compression flatten such regions further. So the decision compares
the two sets where they are flattest, in the same units (both rounded to levels, as image files are).

The clean Xb is not put through G's JPEG stage first: real LR that are libjpeg's JPEG alone read 1.5-1.7
times the HR set's Xb through G's codec at the same quality, as much as noisy sets whose grain later steps
smoothed (BENCHMARKS.md, "The grain check"). Against the plain Xb, JPEG at high quality alone still reads
above (q75: 1.15 times), and there G keeps its grain, as without the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Side of the patches whose fine detail is read, in LR pixels.
PATCH = 4
#: The share of a set's patches read as flat.
FLAT_SHARE = 0.1
#: Images read per set, an even spread (flat patches are plentiful; more changes the reading little).
MAX_IMAGES = 256


def diagonal_detail(x: torch.Tensor) -> torch.Tensor:
    """The finest diagonal Haar detail (x[i,j] - x[i,j+1] - x[i+1,j] + x[i+1,j+1]) / 2: white noise of std s
    has std s there, smooth content almost none."""
    return (x[..., :-1, :-1] - x[..., :-1, 1:] - x[..., 1:, :-1] + x[..., 1:, 1:]) / 2


def patch_detail(x: torch.Tensor) -> torch.Tensor:
    """The RMS diagonal detail (colour channels together) of every PATCH x PATCH tile of a batch (levels 0-255),
    flattened, leaving out tiles with a clipped pixel (0 or 255 in a channel): a blown-out background is flat
    whatever grain the camera added (the clipping cut it off), and would read as a set without grain."""
    x = x.double()
    energy = diagonal_detail(x).pow(2).mean(1, keepdim=True)
    clipped = ((x <= 0) | (x >= 255)).any(1, keepdim=True).double()
    clipped = F.max_pool2d(F.max_pool2d(clipped, 2, stride=1), PATCH)  # any pixel a tile's detail reads
    detail = F.avg_pool2d(energy, PATCH).sqrt()
    return detail[clipped == 0]


def flat_level(details: torch.Tensor) -> float:
    """The mean of the lowest FLAT_SHARE of patch details: the fine detail where a set is flattest (nan for none)."""
    if not details.numel():
        return float("nan")
    k = max(1, round(FLAT_SHARE * details.numel()))
    return float(details.topk(k, largest=False).values.mean())


def spread(n: int, most: int = MAX_IMAGES) -> list[int]:
    """Indices of an even spread of at most ``most`` of ``n`` images."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique().tolist()


@dataclass(frozen=True)
class GrainReading:
    """The flat-region detail of the real LR and of the clean Xb, in levels of 255, and the images read per set."""

    real: float
    clean: float
    read: int

    @property
    def carries(self) -> bool:
        """The real LR hold more fine detail where they are flattest than the clean Xb: grain (also when either
        set has no unclipped patch to read: G keeps its grain, as without the check)."""
        return not self.real <= self.clean

    def describe(self) -> str:
        if math.isnan(self.real) or math.isnan(self.clean):
            return f"grain not read (every patch has a clipped pixel; {self.read} images each)"
        found = "grain" if self.carries else "no grain"
        return f"{found} (flat-region detail {self.real:.2f} levels, clean Xb {self.clean:.2f}; {self.read} images each)"


def read_grain(hr_images: torch.Tensor, lr_images: torch.Tensor, scale: int, chunk: int = 32) -> GrainReading:
    """Compare the real LR (n, 3, h, w, uint8) with the clean Xb of the HR images (bicubic downscale by ``scale``,
    rounded to levels) where each set is flattest."""
    from .models import downscale

    def details(images: torch.Tensor, make) -> torch.Tensor:
        pick = spread(len(images))
        return torch.cat([patch_detail(make(images[pick[i : i + chunk]])) for i in range(0, len(pick), chunk)])

    def clean_xb(hr: torch.Tensor) -> torch.Tensor:
        return downscale(hr.float() / 255, scale).mul(255).round()

    real = details(lr_images, lambda x: x)
    clean = details(hr_images, clean_xb)
    return GrainReading(flat_level(real), flat_level(clean), min(len(spread(len(lr_images))), len(spread(len(hr_images)))))
