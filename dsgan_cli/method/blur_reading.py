"""How much and in which direction the real LR are blurred, read off the images before training (as the grain
and G's JPEG quality are).

Set by the GAN alone, G's blur (``model.blur_kernel``) stopped near 1 px of standard deviation in a short run: a
third short of a 1.5 px Gaussian, half of a 7 px motion blur; started further out, the GAN widened it past the
truth (BENCHMARKS.md, "The read blur"). The two sets' mean power spectra say what it is. A blur multiplies the
spectrum by its kernel's squared transfer function, exp(-4 pi^2 f'Cf) for a Gaussian of covariance C, so over
the low and middle frequencies, where grain and compression change the spectrum little, log(real / clean) is a
plane in (fx^2, fx fy, fy^2) plus a difference of contrast between the two sets' photos (they are not the same
photos), which would otherwise read as blur: a constant, and cos 2 theta and sin 2 theta of the frequency's
direction, the same at every |f|, for photos that hold more edges of one orientation than the other set's (the
bench's two photo sets, neither blurred, read 0.37 px of blur along x without them and 0.00 with them; an
isotropic 0.6 px blur 0.69 x 0.00 px and 0.56 x 0.12).

Noise raises the real LR's power towards the top of the band and makes the reading short, never long.

A Gaussian reads a long motion blur short: a 7-px line's transfer function, sinc(7 f) along the line, falls to
zero at 1/7 cycle per pixel, inside the band, where no Gaussian's does (a 7-px motion blur, sd 2.0 px along it,
read 1.3-1.4 px). So straight lines of any length and angle are also tried, each under the Gaussian: its squared
transfer function divides the ratio before the same fit. The best is kept where it takes away a clear share of
what the Gaussian alone leaves (LINE_GAIN); elsewhere a short line at some angle takes up the two sets'
differences, and the Gaussian stands alone. (Uniform disks, defocus, were tried the same way and left out: on the
test photos their zeros lie where the real LR keep too little power to be fitted, and a disk read no better than a
Gaussian.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .grain import clean_xb
from .image_sampling import spread
from .models import BlurKernel, cov_axes

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
#: Frequencies with power on both sides a fit needs (six unknowns; a spectrum holds each frequency twice, f and -f;
#: a 32-px tile has about 200 in the band). A set that cannot tell the unknowns apart gives no reading either.
MIN_FREQUENCIES = 16
#: Images read per set, an even spread.
MAX_IMAGES = 256
#: Lengths of the straight motion blurs tried under the Gaussian, in px (at most G's kernel side: see read_blur).
LINE_LENGTHS = torch.arange(2.0, 9.01, 0.5, dtype=torch.float64)
#: Their angles, in degrees counter-clockwise from x (y up).
LINE_ANGLES = torch.arange(0.0, 180.0, 2.0, dtype=torch.float64)
#: A line is read where it takes away at least this share of the Gaussian fit's weighted squared residual. On the
#: test photos: 7-px motion blurs 38-53 %; 5-px ones 11-20 % (read as a line or not); Gaussian blurs up to 2.5 px
#: at most 19 %; JPEG, noise and no blur 12 %.
LINE_GAIN = 0.2
#: Frequencies a line's fit needs: a strong blur leaves few above FLOOR, and the best of the many lines then fits
#: their scatter (Gaussian blurs of 3-6 px on the test photos, 22-42 frequencies, read as 8.5-9 px lines).
LINE_MIN_FREQUENCIES = 64


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


def line_transfers(fx: torch.Tensor, fy: torch.Tensor) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """The log squared transfer functions sinc^2(L f.u) at frequencies (``fx``, ``fy``; cycles per px, y down) of
    every line tried (frequencies x lines), floored at FLOOR (their zeros hold the real LR's noise, not signal), and
    each line's (length, angle)."""
    theta = torch.deg2rad(LINE_ANGLES)
    along = fx[:, None] * torch.cos(theta) - fy[:, None] * torch.sin(theta)  # (frequencies, angles)
    lines = torch.sinc(LINE_LENGTHS[:, None, None] * along).permute(1, 0, 2).flatten(1)  # (frequencies, lengths x angles)
    return lines.pow(2).clamp(min=FLOOR).log(), [(float(n), float(a)) for n in LINE_LENGTHS for a in LINE_ANGLES]


def fit_blur(
    real: torch.Tensor, clean: torch.Tensor, band: float = BAND, longest: float = float(LINE_LENGTHS[-1])
) -> tuple[torch.Tensor, tuple[float, float] | None] | None:
    """(covariance, line) of the blur that best turns the ``clean`` power spectrum into the ``real`` one over
    0 < |f| <= ``band``, up to a factor of the direction alone (a difference of contrast): a Gaussian (covariance
    2 x 2, px^2, in (x right, y down); positive semi-definite) along a straight line of (length px, at most
    ``longest``; angle deg) (a motion blur, :func:`line_transfers`; None: the Gaussian alone, where no line takes
    away LINE_GAIN of its residual or fewer than LINE_MIN_FREQUENCIES are fitted). Weighted least squares on the
    log ratio, each frequency weighted by the clean amplitude; None where fewer than MIN_FREQUENCIES have power on
    both sides (featureless images say nothing of a blur) or where they cannot tell the fit's terms apart."""
    f = torch.fft.fftfreq(real.shape[-1], dtype=torch.float64)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    ratio = real / clean.clamp(min=1e-12)
    radius = (fx**2 + fy**2).sqrt()
    use = (radius > 0) & (radius <= band) & (ratio > FLOOR) & (clean > 0)
    if int(use.sum()) < MIN_FREQUENCIES:
        return None
    fx, fy = fx[use], fy[use]
    r2 = fx**2 + fy**2
    gaussian = [-4 * math.pi**2 * fx**2, -8 * math.pi**2 * fx * fy, -4 * math.pi**2 * fy**2]
    # A blur's log transfer grows with |f|^2; a difference of contrast is the same at every |f|: overall (the
    # constant) or per direction (cos 2 theta, sin 2 theta: one set's photos hold more edges of one orientation).
    a = torch.stack([*gaussian, torch.ones_like(fx), (fx**2 - fy**2) / r2, 2 * fx * fy / r2], 1)
    w = clean[use].sqrt()[:, None]
    if int(torch.linalg.matrix_rank(a * w)) < a.shape[1]:
        return None  # e.g. frequencies on two rings only: |f|^2 and the per-direction terms cannot be told apart
    lines, kinds = line_transfers(fx, fy)
    target = ratio[use].log()[:, None]
    targets = torch.cat([target, target - lines], 1) * w  # column 0: the Gaussian alone
    solution = torch.linalg.lstsq(a * w, targets).solution
    residual = ((a * w) @ solution - targets).pow(2).sum(0)
    too_long = torch.tensor([length > longest for length, _ in kinds])
    best = int(residual[1:].masked_fill(too_long, math.inf).argmin()) + 1
    enough = len(fx) >= LINE_MIN_FREQUENCIES and not bool(too_long[best - 1])
    pick = best if enough and residual[best] <= (1 - LINE_GAIN) * residual[0] else 0
    cxx, cxy, cyy = solution[:3, pick]
    vals, vecs = torch.linalg.eigh(torch.stack([torch.stack([cxx, cxy]), torch.stack([cxy, cyy])]))
    cov = vecs @ torch.diag(vals.clamp(min=0)) @ vecs.T
    return (cov, kinds[pick - 1] if pick else None) if bool(torch.isfinite(cov).all()) else None


@dataclass(frozen=True)
class BlurReading:
    """The real LR's blur relative to the clean Xb: a Gaussian's covariance (None: too few tiles to read) along a
    straight ``line`` of (length px, angle deg counter-clockwise from x, y up), a motion blur, or None (the Gaussian
    alone); and how many images and tiles of each set were read."""

    cov: torch.Tensor | None
    real_images: int
    clean_images: int
    real_tiles: int
    clean_tiles: int
    line: tuple[float, float] | None = None

    @property
    def sharp(self) -> bool:
        """A Gaussian alone, narrower than G's sharp start along every axis: no blur (G's kernel is the identity
        where G adds no grain; grain makes a reading short, and under it the kernel keeps the sharp start)."""
        return self.cov is not None and BlurKernel.no_blur(self.cov, self.centres())

    def centres(self) -> torch.Tensor:
        """Points (m, 2; x right, y down, px) spread evenly along the line, 1/16 px apart (the origin alone without
        one): the blur is the Gaussian around each of them, averaged."""
        length, angle = self.line or (0.0, 0.0)
        t = torch.linspace(-length / 2, length / 2, 1 + 2 * math.ceil(8 * length), dtype=torch.float64)[:, None]
        return t * torch.tensor([math.cos(math.radians(angle)), -math.sin(math.radians(angle))], dtype=torch.float64)

    def describe(self) -> str:
        counts = f"{self.real_images} real LR and {self.clean_images} HR images, {self.real_tiles} and {self.clean_tiles} tiles"
        if self.cov is None:
            return f"blur not read (fewer than {MIN_TILES} tiles of {TILE} x {TILE} px in a set, or no detail to read; {counts})"
        major, minor, angle = cov_axes(self.cov)
        line = f"motion blur {self.line[0]:.1f} px at {self.line[1]:.0f} deg, then " if self.line else ""
        at = f" at {angle:.0f} deg" if major >= 0.005 else ""  # a Gaussian of no width has no direction
        return f"{line}blur sd {major:.2f} x {minor:.2f} px{at} against the clean Xb ({counts})"


def read_blur(hr_images: torch.Tensor, lr_images: torch.Tensor, scale: int, kernel: int = 9) -> BlurReading:
    """Read the blur of the real LR (n, 3, h, w, uint8) against the clean Xb of the HR images (bicubic downscale
    by ``scale``, rounded to levels) off the two sets' mean power spectra; a line is at most ``kernel`` px long (the
    side of G's kernel, which would cut a longer one)."""

    def tiles(images: torch.Tensor, make) -> tuple[torch.Tensor, int]:
        pick = spread(len(images), MAX_IMAGES)
        # One image at a time: memory stays bounded whatever the image size.
        parts = [grey_tiles(make(images[i : i + 1])) for i in pick]
        return torch.cat(parts) if parts else torch.zeros(0, TILE, TILE, dtype=torch.float64), len(pick)

    real, n_real = tiles(lr_images, lambda x: x)
    clean, n_clean = tiles(hr_images, lambda hr: clean_xb(hr, scale))
    fit = fit_blur(mean_power(real), mean_power(clean), longest=kernel) if min(len(real), len(clean)) >= MIN_TILES else None
    cov, line = fit if fit is not None else (None, None)
    return BlurReading(cov, n_real, n_clean, len(real), len(clean), line)
