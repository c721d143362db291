"""How much and in which direction the real LR are blurred, read off the images before training (as the grain
and G's JPEG quality are).

Set by the GAN alone, G's blur (``model.blur_kernel``) stopped near 1 px of standard deviation in a short run: a
third short of a 1.5 px Gaussian, half of a 7 px motion blur; started further out, the GAN widened it past the
truth (BENCHMARKS.md, "The read blur"). The two sets' mean power spectra say what it is. A blur multiplies the
spectrum by its kernel's squared transfer function, exp(-4 pi^2 f'Cf) for a Gaussian of covariance C, so over
the low and middle frequencies, where grain and compression change the spectrum little, log(real / clean) is a
plane in (fx^2, fx fy, fy^2) plus a constant; the constant takes up a difference of contrast between the two
sets' photos (they are not the same photos), which would otherwise read as blur.

Noise raises the real LR's power towards the top of the band and makes the reading short, never long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .grain import clean_xb
from .image_sampling import spread

#: Side of the square tiles whose spectra are averaged, in LR pixels (every tile the same size, whatever the
#: images' size).
TILE = 32
#: The frequencies fitted: 0 < |f| <= BAND cycles per pixel (above it grain and compression dominate).
BAND = 0.25
#: Frequencies where the real LR keep less than this share of the clean power are left out (a strong blur's stop
#: band: there log(real / clean) is noise).
FLOOR = 0.05
#: Tiles a set needs for a reading.
MIN_TILES = 16
#: Frequencies with power on both sides a fit needs (four unknowns; a 32-px tile has about 200 in the band).
MIN_FREQUENCIES = 16
#: Images read per set, an even spread.
MAX_IMAGES = 256


def grey_tiles(images: torch.Tensor, tile: int = TILE) -> torch.Tensor:
    """The non-overlapping ``tile`` x ``tile`` tiles of (n, 3, h, w) images, grey (the channels' mean), float64."""
    g = images.double().mean(1)
    n, h, w = g.shape
    if h < tile or w < tile:
        return g.new_zeros(0, tile, tile)
    g = g[:, : h - h % tile, : w - w % tile]
    return g.unfold(1, tile, tile).unfold(2, tile, tile).reshape(-1, tile, tile)


def mean_power(tiles: torch.Tensor) -> torch.Tensor:
    """The tiles' mean 2-D power spectrum (each tile's mean removed, a Hann window against edge leakage)."""
    t = tiles - tiles.mean((-2, -1), keepdim=True)
    h = torch.hann_window(t.shape[-1], periodic=False, dtype=torch.float64)
    return (torch.fft.fft2(t * (h[:, None] * h[None, :])).abs() ** 2).mean(0)


def fit_blur(real: torch.Tensor, clean: torch.Tensor, band: float = BAND) -> torch.Tensor | None:
    """The covariance (2 x 2, px^2, in (x right, y down); positive semi-definite) of the Gaussian blur that best
    turns the ``clean`` power spectrum into the ``real`` one over 0 < |f| <= ``band``, up to a constant factor:
    weighted least squares on the log ratio, each frequency weighted by the clean amplitude (None where fewer than
    MIN_FREQUENCIES have power on both sides: featureless images say nothing of a blur)."""
    f = torch.fft.fftfreq(real.shape[-1], dtype=torch.float64)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    ratio = real / clean.clamp(min=1e-12)
    radius = (fx**2 + fy**2).sqrt()
    use = (radius > 0) & (radius <= band) & (ratio > FLOOR) & (clean > 0)
    if int(use.sum()) < MIN_FREQUENCIES:
        return None
    fx, fy = fx[use], fy[use]
    a = torch.stack([-4 * math.pi**2 * fx**2, -8 * math.pi**2 * fx * fy, -4 * math.pi**2 * fy**2, torch.ones_like(fx)], 1)
    w = clean[use].sqrt()[:, None]
    cxx, cxy, cyy, _ = torch.linalg.lstsq(a * w, ratio[use].log()[:, None] * w).solution.squeeze(1)
    vals, vecs = torch.linalg.eigh(torch.stack([torch.stack([cxx, cxy]), torch.stack([cxy, cyy])]))
    cov = vecs @ torch.diag(vals.clamp(min=0)) @ vecs.T
    return cov if bool(torch.isfinite(cov).all()) else None


def axes(cov: torch.Tensor) -> tuple[float, float, float]:
    """(major sd, minor sd in px, the major axis' angle in degrees counter-clockwise from x, y up) of a covariance
    in (x right, y down), as :func:`~dsgan_cli.method.models.kernel_axes` reports G's kernel."""
    vals, vecs = torch.linalg.eigh(cov.double())
    angle = math.degrees(math.atan2(-float(vecs[1, 1]), float(vecs[0, 1]))) % 180
    return math.sqrt(max(float(vals[1]), 0.0)), math.sqrt(max(float(vals[0]), 0.0)), angle


@dataclass(frozen=True)
class BlurReading:
    """The real LR's blur relative to the clean Xb as a Gaussian's covariance (None: too few tiles to read), and
    how many images and tiles of each set were read."""

    cov: torch.Tensor | None
    real_images: int
    clean_images: int
    real_tiles: int
    clean_tiles: int

    def describe(self) -> str:
        counts = f"{self.real_images} real LR and {self.clean_images} HR images, {self.real_tiles} and {self.clean_tiles} tiles"
        if self.cov is None:
            return f"blur not read (fewer than {MIN_TILES} tiles of {TILE} x {TILE} px in a set, or no detail to read; {counts})"
        major, minor, angle = axes(self.cov)
        return f"blur sd {major:.2f} x {minor:.2f} px at {angle:.0f} deg against the clean Xb ({counts})"


def read_blur(hr_images: torch.Tensor, lr_images: torch.Tensor, scale: int) -> BlurReading:
    """Read the blur of the real LR (n, 3, h, w, uint8) against the clean Xb of the HR images (bicubic downscale
    by ``scale``, rounded to levels) off the two sets' mean power spectra."""

    def tiles(images: torch.Tensor, make) -> tuple[torch.Tensor, int]:
        pick = spread(len(images), MAX_IMAGES)
        # One image at a time: memory stays bounded whatever the image size.
        parts = [grey_tiles(make(images[i : i + 1])) for i in pick]
        return torch.cat(parts) if parts else torch.zeros(0, TILE, TILE, dtype=torch.float64), len(pick)

    real, n_real = tiles(lr_images, lambda x: x)
    clean, n_clean = tiles(hr_images, lambda hr: clean_xb(hr, scale))
    cov = fit_blur(mean_power(real), mean_power(clean)) if min(len(real), len(clean)) >= MIN_TILES else None
    return BlurReading(cov, n_real, n_clean, len(real), len(clean))
