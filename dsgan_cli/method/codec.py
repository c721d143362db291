"""JPEG as G's last stage (``model.jpeg_quality``), and the quality read off the real photos.

Photos that went through JPEG lose fine detail inside 8-px blocks and gain steps at the blocks' edges.
A convolutional G learns the first (a blur) but not the second, and an SR net trained on blurred but
blockless pairs learns to sharpen, which on real JPEGs sharpens their block edges too: measured, such pairs
trained SR below plain bicubic pairs (BENCHMARKS.md "Downstream"). With this stage G's output goes through
baseline JPEG as libjpeg codes it (full-range YCbCr, 4:2:0 chroma by 2x2 averages, 8x8 DCT, the standard
tables scaled by quality), so blocks come out where a codec puts them.

The quality is not left to the GAN (through the quantiser's rounding its gradient pointed to finer steps,
away from the real photos' quality). It is read off the real LR: the DCT coefficients of a decoded JPEG's
blocks lie on multiples of the quantiser's steps, whatever the photo shows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .image_sampling import spread

#: JPEG's minimum coded unit with 4:2:0 chroma: the period of its block grid in pixels.
MCU = 16

# ITU-T T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), row-major.
_LUMA = [
    16,
    11,
    10,
    16,
    24,
    40,
    51,
    61,
    12,
    12,
    14,
    19,
    26,
    58,
    60,
    55,
    14,
    13,
    16,
    24,
    40,
    57,
    69,
    56,
    14,
    17,
    22,
    29,
    51,
    87,
    80,
    62,
    18,
    22,
    37,
    56,
    68,
    109,
    103,
    77,
    24,
    35,
    55,
    64,
    81,
    104,
    113,
    92,
    49,
    64,
    78,
    87,
    103,
    121,
    120,
    101,
    72,
    92,
    95,
    98,
    112,
    100,
    103,
    99,
]
_CHROMA = [
    17,
    18,
    24,
    47,
    99,
    99,
    99,
    99,
    18,
    21,
    26,
    66,
    99,
    99,
    99,
    99,
    24,
    26,
    56,
    99,
    99,
    99,
    99,
    99,
    47,
    66,
    99,
    99,
    99,
    99,
    99,
    99,
] + [99] * 32


def tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's luma and chroma quantisation tables (8, 8) for a quality 1-100 (jcparam.c's scaling)."""
    q = min(max(int(quality), 1), 100)
    percent = 5000 // q if q < 50 else 200 - 2 * q
    scaled = lambda base: ((torch.tensor(base, dtype=torch.float64) * percent + 50) // 100).clamp(1, 255)  # noqa: E731
    return scaled(_LUMA).view(8, 8).float(), scaled(_CHROMA).view(8, 8).float()


def dct_matrix(n: int = 8) -> torch.Tensor:
    """The orthonormal DCT-II matrix: coefficients = D @ block @ D.T."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """JFIF full-range YCbCr of RGB in levels 0-255, with Cb and Cr centred on 0."""
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.stack([y, cb, cr], 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr`."""
    y, cb, cr = x.unbind(1)
    return torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)


def straight_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) in value, the identity in gradient (G learns through the quantiser as if it were not there)."""
    return x + (torch.round(x) - x).detach()


@functools.lru_cache(maxsize=16)
def codec_constants(quality: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(DCT matrix, luma table, chroma table) on ``device``: built once, not on every forward."""
    luma, chroma = tables(quality)
    return dct_matrix().to(device), luma.to(device), chroma.to(device)


def quantise_blocks(plane: torch.Tensor, table: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Each 8x8 block of ``plane`` (n, c, H, W; H, W multiples of 8) through DCT ``d``, quantiser and inverse DCT."""
    n, c, h, w = plane.shape
    blocks = plane.reshape(n, c, h // 8, 8, w // 8, 8).transpose(3, 4)
    coef = d @ blocks @ d.t()
    coef = straight_round(coef / table) * table
    blocks = d.t() @ coef @ d
    return blocks.transpose(3, 4).reshape(n, c, h, w)


def jpeg(x: torch.Tensor, quality: int, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``x`` (n, 3, h, w, values 0-1) through baseline 4:2:0 JPEG at ``quality`` (1-100), decoded.

    ``origin`` is where ``x`` starts in the whole image, so that blocks lie on the whole image's grid; blocks
    cut by ``x``'s edges are completed by repeating its edge pixels, as an encoder does at an image's edge.
    Chroma is upsampled by repetition (libjpeg's decoder interpolates), which keeps each 16-px unit on its own.
    """
    n, _, h, w = x.shape
    top, left = origin[0] % MCU, origin[1] % MCU
    pad = (left, (-(left + w)) % MCU, top, (-(top + h)) % MCU)
    with torch.autocast(x.device.type, enabled=False):
        v = F.pad(x.float().clamp(0, 1) * 255, pad, mode="replicate")
        d, luma, chroma = codec_constants(int(quality), v.device)
        ycc = rgb_to_ycbcr(v)
        y = quantise_blocks(ycc[:, :1] - 128, luma, d) + 128
        c = quantise_blocks(F.avg_pool2d(ycc[:, 1:], 2), chroma, d)
        c = c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        out = ycbcr_to_rgb(torch.cat([y, c], 1)).clamp(0, 255) / 255
    return out[:, :, top : top + h, left : left + w].to(x.dtype)


def block_dct(y: torch.Tensor, top: int = 0, left: int = 0) -> torch.Tensor:
    """DCT coefficients (blocks, 8, 8) of the whole 8x8 blocks of plane ``y`` (h, w) starting at (top, left)."""
    y = y[top:, left:]
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    d = dct_matrix().to(y)
    return d @ y[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(1, 2).reshape(-1, 8, 8) @ d.t()


def block_phase(y: torch.Tensor) -> tuple[int, int]:
    """Where the 8-px block grid of a decoded JPEG's luma plane ``y`` (h, w) lies: the offsets (0-7) at which
    the most AC coefficients are about 0 (a quantiser zeroes most of them; off its grid they spread)."""

    def zeros(top: int, left: int) -> float:
        coef = block_dct(y, top, left).flatten(1)[:, 1:]
        return float((coef.abs() < 1).double().mean()) if coef.numel() else 0.0

    return max(((t, c) for t in range(8) for c in range(8)), key=lambda tc: zeros(*tc))


#: Fewest AC coefficients a quality's comb score is taken over (fewer land on some comb by chance).
COMB_COUNT = 128

#: A comb score this high says the image was decoded from JPEG (white noise or plain photos score near 0).
COMB_MIN = 0.5

#: Fewest distinct quantised values (frequency, multiple of its step) the coefficients on a comb must take. A
#: smooth gradient repeats one value per frequency in every block, and a few repeated values sit on some
#: quality's comb by chance (a linear gradient read as q53, a radial one as q26); a decoded photo takes hundreds.
DISTINCT_MIN = 32

#: Least evidence, in standard deviations of the score of values off any comb (score x sqrt(2 x distinct values)),
#: for a quality to be read: 100 qualities are tried, so a few sigma arise by chance.
SIGMA_MIN = 8.0


def _comb(coef: torch.Tensor, quality: int) -> tuple[float, int, int]:
    """(score, coefficients, distinct values) of the luma AC coefficients ``coef`` (blocks, 8, 8) on ``quality``'s
    comb. Only coefficients a quantiser with those steps would not zero count (|c| >= step / 2; the zeros sit on
    every comb); DC is left out (a flat or clipped block's DC is the same large number everywhere). The score is
    the mean of cos(2 pi c / step) over the distinct values (frequency, nearest multiple), each value's
    coefficients averaged first: 1 on a comb, about 0 or below off one, and a value repeated in many blocks
    counts once."""
    step = tables(quality)[0].double().expand_as(coef)
    ac = torch.ones(8, 8, dtype=torch.bool)
    ac[0, 0] = False
    use = ac & (step >= 2) & (coef.abs() >= step / 2)
    n = int(use.sum())
    if n == 0:
        return -1.0, 0, 0
    k = torch.round(coef[use] / step[use]).long()
    pos = torch.arange(64).view(8, 8).expand_as(coef)[use]
    keys, inverse = torch.unique(pos * (1 << 20) + k, return_inverse=True)
    cos = torch.cos(2 * math.pi * coef[use] / step[use])
    per_value = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inverse, cos)
    per_value /= torch.bincount(inverse, minlength=len(keys)).double()
    return float(per_value.mean()), n, len(keys)


def comb_scores(coef: torch.Tensor) -> torch.Tensor:
    """For each quality 1-100, how well the luma AC coefficients ``coef`` (blocks, 8, 8) sit on multiples of that
    quality's steps (see :func:`_comb`); -1 where fewer than ``COMB_COUNT`` coefficients count."""
    out = torch.full((100,), -1.0, dtype=torch.float64)
    for q in range(1, 101):
        score, n, _ = _comb(coef, q)
        if n >= COMB_COUNT:
            out[q - 1] = score
    return out


@dataclass(frozen=True)
class QualityReading:
    """What the blocks of a set of images say about their JPEG quality: the best-fitting quality, its comb score
    and the distinct values behind it, and the verdict (``quality``, 0 for none) with how sure it is."""

    best: int
    score: float
    distinct: int
    read: int = 1

    @property
    def sigma(self) -> float:
        """The evidence in standard deviations of a score off any comb (about 0 for a photo never saved as JPEG)."""
        return self.score * math.sqrt(2 * self.distinct) if self.distinct else 0.0

    @property
    def quality(self) -> int:
        """The quality read, or 0 unless the evidence is strong (score, distinct values and sigma all high)."""
        strong = self.score >= COMB_MIN and self.distinct >= DISTINCT_MIN and self.sigma >= SIGMA_MIN
        return self.best if self.best and strong else 0

    def describe(self) -> str:
        """One line: the quality read (or none) and how sure that is."""
        evidence = (
            f"comb score {self.score:.2f} over {self.distinct} distinct quantised values, {self.sigma:.1f} sigma"
            if self.best
            else "too few coefficients to tell"
        )
        if self.quality:
            return f"JPEG quality {self.quality}, read off {self.read} images ({evidence})"
        fit = f"best fit q{self.best}: " if self.best else ""
        return (
            f"no JPEG quality read off {self.read} images ({fit}{evidence}; a reading needs a score of at least "
            f"{COMB_MIN}, {DISTINCT_MIN} distinct values and {SIGMA_MIN:g} sigma)"
        )


def read_coefficients(coef: torch.Tensor, read: int = 1) -> QualityReading:
    """The :class:`QualityReading` of luma coefficients (blocks, 8, 8) taken from ``read`` images."""
    if len(coef) == 0:
        return QualityReading(0, -1.0, 0, read)
    scores = comb_scores(coef)
    best = int(scores.argmax()) + 1
    if scores[best - 1] < -0.5:  # no quality had enough coefficients
        return QualityReading(0, -1.0, 0, read)
    score, _, distinct = _comb(coef, best)
    return QualityReading(best, score, distinct, read)


#: Side of the central crop each image is read on: enough blocks, bounded time for large photos.
READ_SIDE = 256


def image_coefficients(rgb: torch.Tensor) -> torch.Tensor:
    """The luma DCT coefficients (blocks, 8, 8) of an image (3, h, w, levels 0-255) on its own block grid, from
    a central crop of at most ``READ_SIDE`` px (cut at multiples of 8, which keeps the grid's phase), leaving
    out blocks with a clipped pixel (0 or 255 in a channel: the codec's output was cut there, off its comb)."""
    h, w = rgb.shape[-2:]
    top, left = max(0, (h - READ_SIDE) // 16 * 8), max(0, (w - READ_SIDE) // 16 * 8)
    rgb = rgb[:, top : top + READ_SIDE, left : left + READ_SIDE].double()
    y = rgb_to_ycbcr(rgb[None])[0, 0] - 128
    phase = block_phase(y)
    coef = block_dct(y, *phase)
    clipped = block_dct(((rgb <= 0) | (rgb >= 255)).any(0).double(), *phase).flatten(1)[:, 0] > 0
    return coef[~clipped]


def quality_of(coef: torch.Tensor) -> int:
    """The quality whose steps the coefficients (blocks, 8, 8) sit on, or 0 unless the evidence is strong."""
    return read_coefficients(coef).quality


def image_quality(rgb: torch.Tensor) -> int:
    """The JPEG quality an image (3, h, w, uint8 or levels 0-255) was last saved at; 0 when its blocks show
    none (not a decoded JPEG at this size, or too smooth to tell)."""
    return quality_of(image_coefficients(rgb))


def read_quality(images: torch.Tensor, max_images: int = 64) -> QualityReading:
    """What the blocks of an even spread of at most ``max_images`` real LR images (n, 3, h, w) say together (small
    images have too few blocks each)."""
    pick = spread(len(images), max_images)
    return read_coefficients(torch.cat([image_coefficients(images[i]) for i in pick]), len(pick))


def estimate_quality(images: torch.Tensor, max_images: int = 64) -> tuple[int, int]:
    """(quality, images read) for a set of real LR images (see :func:`read_quality`), 0 for none."""
    reading = read_quality(images, max_images)
    return reading.quality, reading.read


# ----------------------------------------------------------------------------- a codec's block grid


#: Rows and columns left out at each image edge when block edges are looked for: resampling, blurs and
#: demosaicing treat an image's edge on their own, which sets its outer rows and columns apart whatever the codec.
GRID_BORDER = 3

#: Least excess of the mean step across the block edges over every other offset's, in both directions, for a grid
#: to be read: a block codec's edges stand 3 % (JPEG q39 under camera noise, 32-px images) to 28 % (WebP q39) above
#: the next offset's; on photos without a codec (clean, noisy, blurred, demosaiced, doubled by nearest neighbour)
#: no offset stood more than 1.4 % above the others, and this is about twice that.
GRID_MIN = 0.025

#: Fewest images a grid is read off: on fewer, photos without a codec put the highest offset on a block edge in both
#: directions by chance.
GRID_IMAGES = 32

#: Grid periods looked for, in px: JPEG's 8-px blocks, then WebP's (VP8's) 4-px transform blocks.
GRID_PERIODS = (8, 4)


def step_profiles(images: torch.Tensor, pick: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean |step| of luma between neighbouring columns (w - 1,) and rows (h - 1,) of images ``pick`` of
    ``images`` (n, 3, h, w, levels 0-255), over the images and the other direction: a block codec's grid lines up its
    edges' steps. One image at a time, luma only: memory stays bounded whatever the image size."""
    cols = torch.zeros(images.shape[-1] - 1, dtype=torch.float64)
    rows = torch.zeros(images.shape[-2] - 1, dtype=torch.float64)
    for i in pick:
        y = rgb_to_ycbcr(images[i : i + 1].double())[0, 0]
        cols += (y[:, 1:] - y[:, :-1]).abs().mean(0)
        rows += (y[1:] - y[:-1]).abs().mean(1)
    return cols / max(1, len(pick)), rows / max(1, len(pick))


def edge_excess(profile: torch.Tensor, period: int) -> float:
    """How far the block edge's mean step stands above the highest other offset's (a fraction; negative where
    another offset is higher), of a step profile folded by ``period``, its ``GRID_BORDER`` outer steps left out.
    Offset k is the step between pixels k and k + 1 of each period, so a grid from the image's corner puts its edges
    at ``period - 1``. 0 when the image holds fewer than two periods inside its borders."""
    idx = torch.arange(len(profile))
    inside = (idx >= GRID_BORDER) & (idx < len(profile) - GRID_BORDER)
    if int(inside.sum()) < 2 * period:
        return 0.0
    folded = torch.stack([profile[inside & (idx % period == k)].mean() for k in range(period)])
    highest = float(folded[:-1].max())
    return float(folded[-1]) / highest - 1 if highest > 0 else 0.0


@dataclass(frozen=True)
class GridReading:
    """Whether a set of images shows a block codec's grid from the image's corner: its period (0 for none), how far
    the steps across its edges stand above the other offsets' (columns, rows; for none, the 8-px edge's), and how
    many images were read."""

    period: int
    excess: tuple[float, float]
    read: int

    def describe(self) -> str:
        """One line: the grid found (or none) and its evidence."""
        ex = f"steps across them {self.excess[0]:.0%} / {self.excess[1]:.0%} above any other offset's (columns / rows)"
        if self.period:
            return f"block edges every {self.period} px ({ex}; {self.read} images)"
        if self.read < GRID_IMAGES:
            return f"no block grid read ({self.read} images; it needs {GRID_IMAGES})"
        return f"no block grid (at 8 px: {ex}; {self.read} images; a grid needs {GRID_MIN:.1%} in both directions)"


def read_grid(images: torch.Tensor, max_images: int = 256) -> GridReading:
    """The block grid an even spread of at most ``max_images`` images (n, 3, h, w, levels 0-255) shows: the first
    period of ``GRID_PERIODS`` whose block edge's step stands at least ``GRID_MIN`` above every other offset's in both
    directions (WebP's 4-px grid fails at 8 px, where offset 3 is an edge too). None off fewer than ``GRID_IMAGES``
    images."""
    pick = spread(len(images), max_images)
    if len(pick) < GRID_IMAGES:
        return GridReading(0, (0.0, 0.0), len(pick))
    cols, rows = step_profiles(images, pick)
    first = (0.0, 0.0)
    for period in GRID_PERIODS:
        c, r = edge_excess(cols, period), edge_excess(rows, period)
        if period == GRID_PERIODS[0]:
            first = (c, r)
        if min(c, r) >= GRID_MIN:
            return GridReading(period, (c, r), len(pick))
    return GridReading(0, first, len(pick))
