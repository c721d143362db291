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
above (on the test suite's photos q60 0.84 times, q75 1.09, q90 1.51), and there G keeps its grain, as
without the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .image_sampling import diagonal_detail, spread
from .models import downscale

#: Side of the patches whose fine detail is read, in LR pixels.
PATCH = 4
#: The share of a set's patches read as flat.
FLAT_SHARE = 0.1
#: Images read per set, an even spread (flat patches are plentiful; more changes the reading little).
MAX_IMAGES = 256
#: Unclipped patches a set needs for a reading. On a few small images the reading is chance: over 20 draws of
#: other photos, blur-only sets of 16 images of 32 px (784 patches) read as grain 3 times, of 2 of 16 px 6 times.
MIN_PATCHES = 2000
#: Pixels per chunk of images read at once (memory stays bounded whatever the image size).
CHUNK_PIXELS = 1 << 22


def patch_detail(x: torch.Tensor) -> torch.Tensor:
    """The RMS diagonal detail (colour channels together) of every PATCH x PATCH tile of a batch (levels 0-255),
    flattened, leaving out tiles with a clipped pixel (0 or 255 in a channel): a blown-out background is flat
    whatever grain the camera added (the clipping cut it off), and would read as a set without grain. Each
    tile's detail reads (PATCH + 1)^2 pixels; images too small for one tile give none."""
    if min(x.shape[-2:]) < PATCH + 1:
        return x.new_zeros(0, dtype=torch.float64)
    x = x.double()
    energy = diagonal_detail(x).pow(2).mean(1, keepdim=True)
    clipped = ((x <= 0) | (x >= 255)).any(1, keepdim=True).double()
    clipped = F.max_pool2d(F.max_pool2d(clipped, 2, stride=1), PATCH)  # any pixel a tile's detail reads
    detail = F.avg_pool2d(energy, PATCH).sqrt()
    return detail[clipped == 0]


def flat_level(details: torch.Tensor) -> float:
    """The mean of the lowest FLAT_SHARE of patch details: the fine detail where a set is flattest (nan for fewer
    than MIN_PATCHES)."""
    if details.numel() < MIN_PATCHES:
        return float("nan")
    k = max(1, round(FLAT_SHARE * details.numel()))
    return float(details.topk(k, largest=False).values.mean())


@dataclass(frozen=True)
class GrainReading:
    """The flat-region detail of the real LR and of the clean Xb, in levels of 255 (nan: too few unclipped
    patches to read), and how many images and unclipped patches of each set were read."""

    real: float
    clean: float
    real_images: int
    clean_images: int
    real_patches: int
    clean_patches: int

    @property
    def carries(self) -> bool:
        """The real LR hold more fine detail where they are flattest than the clean Xb: grain (also when either
        set could not be read: G keeps its grain, as without the check)."""
        return not self.real <= self.clean

    def describe(self) -> str:
        counts = (
            f"{self.real_images} real LR and {self.clean_images} HR images, {self.real_patches} and {self.clean_patches} unclipped patches"
        )
        unread = [what for what, v in (("real LR", self.real), ("HR", self.clean)) if math.isnan(v)]
        if unread:
            return f"grain not read (the {' and '.join(unread)} images have fewer than {MIN_PATCHES} unclipped {PATCH + 1} x {PATCH + 1} px patches; {counts})"
        found = "grain" if self.carries else "no grain"
        return f"{found} (flat-region detail {self.real:.2f} levels, clean Xb {self.clean:.2f}; {counts})"


def clean_xb(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The clean Xb of HR images (n, 3, H, W, levels 0-255) as an image file holds it: G's bicubic downscale by
    ``scale``, rounded to levels (float): what the readings of the real LR compare them with."""
    return downscale(hr.float() / 255, scale).mul_(255).round_()


def read_grain(hr_images: torch.Tensor, lr_images: torch.Tensor, scale: int) -> GrainReading:
    """Compare the real LR (n, 3, h, w, uint8) with the clean Xb of the HR images (bicubic downscale by ``scale``,
    rounded to levels) where each set is flattest."""

    def details(images: torch.Tensor, make) -> tuple[torch.Tensor, int]:
        pick = spread(len(images), MAX_IMAGES)
        chunk = max(1, CHUNK_PIXELS // max(1, images.shape[-2] * images.shape[-1]))
        parts = [patch_detail(make(images[pick[i : i + chunk]])) for i in range(0, len(pick), chunk)]
        return torch.cat(parts), len(pick)

    real, n_real = details(lr_images, lambda x: x)
    clean, n_clean = details(hr_images, lambda hr: clean_xb(hr, scale))
    return GrainReading(flat_level(real), flat_level(clean), n_real, n_clean, real.numel(), clean.numel())
