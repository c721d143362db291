"""The DSGAN networks and frequency filters shared by every subcommand.

Architecture follows Fritsche et al., "Frequency Separation for Real-World
Super-Resolution" (2019): a small same-resolution residual generator and a
fully convolutional, stride-1 discriminator that sees only high frequencies.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .codec import MCU, jpeg


def gaussian_kernel(kernel_size: int, sigma: float | None = None) -> torch.Tensor:
    """Return a normalised 2-D Gaussian kernel of shape (k, k); sigma defaults to k / 6."""
    if sigma is None:
        # As the original DSGAN code: +-3 sigma span the kernel.
        sigma = kernel_size / 6
    ax = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k2 = torch.outer(g, g)
    return (k2 / k2.sum()).float()


def downscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Antialiased bicubic downscale of a (N, 3, H, W) batch in [0, 1] by an integer ``scale``.

    This is how Xb is made from HR everywhere (training data and ``degrade``),
    so both see exactly the same input distribution.
    """
    if scale == 1:
        return x
    h, w = x.shape[-2:]
    size = (max(1, round(h / scale)), max(1, round(w / scale)))
    y = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    # Bicubic overshoots at edges; the generator expects [0, 1] like real images.
    return y.clamp_(0.0, 1.0)


class FilterLow(nn.Module):
    """Low-pass filter: average pooling (default) or Gaussian blur, stride 1.

    ``padding="same"`` keeps the spatial size. Box filtering then averages only
    the pixels that lie inside the image (``count_include_pad=False``), so a
    constant image stays constant up to its borders instead of darkening
    there; the Gaussian variant pads by reflection for the same reason.
    ``padding="valid"`` drops the border instead (used by the colour loss, as
    in the reference implementation, so borders carry no padding artefacts).
    """

    def __init__(self, kernel_size: int = 5, padding: str = "same", gaussian: bool = False, sigma: float | None = None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.kernel_size = kernel_size
        self.padding = padding
        self.gaussian = gaussian
        if gaussian:
            # Not persistent: a fixed filter is not a weight, and keeping it out
            # of the state dict keeps checkpoints identical across filter choices.
            self.register_buffer("kernel", gaussian_kernel(kernel_size, sigma)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        pad = (k - 1) // 2 if self.padding == "same" else 0
        if not self.gaussian:
            return F.avg_pool2d(x, k, stride=1, padding=pad, count_include_pad=False)
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        c = x.shape[1]
        weight = self.kernel.to(dtype=x.dtype).expand(c, 1, k, k)
        return F.conv2d(x, weight, groups=c)

    def extra_repr(self) -> str:
        kind = "gaussian" if self.gaussian else "box"
        return f"kernel_size={self.kernel_size}, padding={self.padding!r}, {kind}"


class FilterHigh(nn.Module):
    """High-pass filter: ``x - low_pass(x)`` with a same-size low-pass."""

    def __init__(self, kernel_size: int = 5, gaussian: bool = False, sigma: float | None = None):
        super().__init__()
        self.low = FilterLow(kernel_size, padding="same", gaussian=gaussian, sigma=sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.low(x)


class ResidualBlock(nn.Module):
    """Conv-PReLU-Conv with an identity skip."""

    def __init__(self, channels: int = 64, conv=None):
        super().__init__()
        conv = conv or (lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1))
        self.conv1 = conv(channels, channels)
        self.prelu = nn.PReLU()
        self.conv2 = conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.prelu(self.conv1(x)))


class BlurKernel(nn.Module):
    """One learned blur for every image: a ``size`` x ``size`` kernel, non-negative, summing to 1 and point
    symmetric, applied to each colour channel with reflected borders.

    Non-negative and normalised: it can blur but neither sharpen nor shift colours. Point symmetric
    (k(-p) = k(p)): its centroid is the centre, so Xd stays aligned with its HR, and an SR net trained on the
    pairs learns no shift; motion, defocus, Gaussian and resampling blurs all have this symmetry. It starts
    close to the identity (the centre holds ``1 / (1 + 4 e^-3 + ...)`` = 0.83).
    """

    #: The sharp start's variance along every axis, px^2 (its logits are -p'p / (2 SHARP)).
    SHARP = 1 / 6

    @classmethod
    def no_blur(cls, cov: torch.Tensor, centres: torch.Tensor | None = None) -> bool:
        """A Gaussian alone (one centre) narrower than the sharp start along every axis: :meth:`start_at` gives the identity."""
        return (centres is None or len(centres) == 1) and float(torch.linalg.eigvalsh(cov.double()).max()) < cls.SHARP

    def __init__(self, size: int):
        super().__init__()
        if size < 3 or size % 2 == 0:
            raise ValueError(f"blur kernel size must be an odd number >= 3, got {size}")
        ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        self.logits = nn.Parameter(-3.0 * (ax[:, None] ** 2 + ax[None, :] ** 2))

    @torch.no_grad()
    def start_at(self, cov: torch.Tensor, centres: torch.Tensor | None = None, identity: bool = True) -> None:
        """Start from a Gaussian of covariance ``cov`` (2 x 2, px^2, (x right, y down)), at least the sharp start's
        width along every axis (cov I / 6), averaged over ``centres`` (m x 2 points in px, (x right, y down): along a
        line for a motion blur; the origin alone when None): log mean_c exp(-(p-c)'cov^-1 (p-c) / 2). With
        ``identity``, a Gaussian alone narrower than the sharp start along every axis is no blur: the identity."""
        vals, vecs = torch.linalg.eigh(cov.double())
        c = torch.zeros(1, 2, dtype=torch.float64) if centres is None else centres.double()
        identity = identity and self.no_blur(cov, centres)
        inv = vecs @ torch.diag(1 / (torch.full_like(vals, 1e-3) if identity else vals.clamp(min=self.SHARP))) @ vecs.T
        ax = torch.arange(self.logits.shape[-1], dtype=torch.float64) - (self.logits.shape[-1] - 1) / 2
        d = torch.stack(torch.meshgrid(ax, ax, indexing="xy"), -1) - c[:, None, None]  # (points, y, x, (x, y))
        self.logits.copy_(torch.logsumexp(-0.5 * torch.einsum("c...i,ij,c...j->c...", d, inv, d), 0) - math.log(len(c)))

    def kernel(self) -> torch.Tensor:
        """The (size, size) kernel: a softmax of the logits, averaged with its 180-degree rotation."""
        k = torch.softmax(self.logits.float().flatten(), 0).view_as(self.logits)
        return (k + k.flip(0, 1)) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.logits.shape[-1]
        pad = size // 2
        k = self.kernel().to(x.dtype).expand(x.shape[1], 1, size, size)
        # Reflection needs more pixels than the pad; an image that small repeats its border instead.
        mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
        return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode=mode), k, groups=x.shape[1])


class GrainKernel(BlurKernel):
    """A learned spatial correlation for the output noise: :class:`BlurKernel`'s kernel scaled to unit energy,
    so white noise through it keeps its variance and takes the kernel's autocorrelation (a camera's demosaicing,
    denoising or a blur after the noise leave grain correlated over neighbouring pixels)."""

    def kernel(self) -> torch.Tensor:
        """The (size, size) kernel: :meth:`BlurKernel.kernel` divided by its L2 norm."""
        k = super().kernel()
        return k / k.norm()


#: Generator options beyond the paper's architecture, with the paper's values as defaults.
PADDINGS = ("zeros", "reflect", "replicate")
OUTPUTS = ("sigmoid", "residual")
#: Normalisation between the discriminator's convolutions.
D_NORMS = ("batch", "none")
#: Options earlier versions had, each measured not to help (BENCHMARKS.md keeps the rows), with the value that
#: meant "off": a file or recipe that turns one on is refused by name instead of being read as something else.
RETIRED_OPTIONS = {"noise_channels": 0, "blur_size": 5, "noise_filter": 1, "grid_period": 0}


class RetiredOptionError(ValueError):
    """A generator or recipe that uses an option this version no longer has."""


def check_retired(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the retired options that hold their "off" value; one that is on is refused by name."""
    for name, off in RETIRED_OPTIONS.items():
        if name in fields and fields[name] != off:
            raise RetiredOptionError(
                f"{name}={fields[name]!r}, a retired option (dsgan-cli 0.1; measured not to "
                f"help, BENCHMARKS.md): retrain without it, or use dsgan-cli 0.1"
            )
    if fields.get("output") == "blur":
        raise RetiredOptionError(
            "output='blur', a retired option (dsgan-cli 0.1; measured not to help, BENCHMARKS.md): retrain without it, or use dsgan-cli 0.1"
        )
    return {k: v for k, v in fields.items() if k not in RETIRED_OPTIONS}


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that shapes G, validated once: :class:`Generator` is built from it, and every generator and
    checkpoint file carries it (JSON metadata ``generator_config``), so import, degrade, pairs and resume build
    the same network. The defaults are the paper's network; the options are described at :class:`Generator`."""

    n_res_blocks: int = 8
    channels: int = 64
    padding: str = "zeros"
    output: str = "sigmoid"
    output_noise: bool = False
    noise_init: float = 1.7
    jpeg_quality: int = 0
    blur_kernel: int = 0
    noise_mix: bool = False
    noise_kernel: int = 0

    def __post_init__(self):
        checks = (
            (isinstance(self.n_res_blocks, int) and self.n_res_blocks >= 0, "n_res_blocks must be an integer >= 0"),
            (isinstance(self.channels, int) and self.channels >= 1, "channels must be an integer >= 1"),
            (self.padding in PADDINGS, f"padding must be one of {PADDINGS}"),
            (self.output in OUTPUTS, f"output must be one of {OUTPUTS}"),
            (isinstance(self.output_noise, bool), "output_noise must be true or false"),
            (0 < self.noise_init <= 255, "noise_init must be in (0, 255]"),
            (isinstance(self.jpeg_quality, int) and 0 <= self.jpeg_quality <= 100, "jpeg_quality must be 0 (off) or 1 to 100"),
            (
                isinstance(self.blur_kernel, int) and (self.blur_kernel == 0 or (self.blur_kernel >= 3 and self.blur_kernel % 2)),
                "blur_kernel must be 0 (off) or an odd number >= 3",
            ),
            (isinstance(self.noise_mix, bool) and (self.output_noise or not self.noise_mix), "noise_mix needs output_noise"),
            (
                isinstance(self.noise_kernel, int) and (self.noise_kernel == 0 or (self.noise_kernel >= 3 and self.noise_kernel % 2)),
                "noise_kernel must be 0 (off) or an odd number >= 3",
            ),
            (self.output_noise or not self.noise_kernel, "noise_kernel needs output_noise"),
        )
        for ok, message in checks:
            if not ok:
                name = message.split()[0]
                raise ValueError(f"{message}, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        """The fields as one JSON object (sorted keys), as stored in a file's metadata."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> GeneratorConfig:
        """The configuration a file's metadata holds; a retired option that is on, or a field this version does
        not know, is refused by name."""
        fields = check_retired(fields)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ValueError(f"unknown generator option {unknown[0]!r}")
        values = {}
        for name, value in fields.items():
            kind = type(known[name].default)
            # JSON has one number type; an integer option holding 2.5 is refused rather than rounded.
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not kind:
                raise ValueError(f"generator option {name}={value!r} is not a {kind.__name__}")
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Everything that shapes D (see :class:`Discriminator`), validated once."""

    filter_kernel: int = 5
    gaussian: bool = False
    norm: str = "batch"

    def __post_init__(self):
        if self.norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {self.norm!r}")
        if self.filter_kernel < 1 or self.filter_kernel % 2 == 0:
            raise ValueError(f"filter_kernel must be a positive odd number, got {self.filter_kernel}")


class Generator(nn.Module):
    """DSGAN degradation generator: image in [0,1] -> degraded image in [0,1], same size, built from a
    :class:`GeneratorConfig`.

    The defaults are the paper's network. The options change it where the paper's choices were measured to
    fail (scripts/bench_learning.py, scripts/bench_sr.py):

    - ``padding``: zero padding shows the network where the border is; with the sigmoid output it drew
      stripes there. ``"reflect"`` gives the border pixels content that looks like the interior.
    - ``output="residual"``: Xd = Xb + r with the last convolution initialised to zero, so G starts as the
      identity and never has to re-learn the colours through a sigmoid. Xd is not clamped here: a clamp has
      no gradient outside [0, 1], and a G pushed there once by a GAN step could never come back (the colour
      loss froze; see BENCHMARKS.md). Every writer clamps when it rounds to 8 bits.
    - ``output_noise``: N(0, 1) noise added at the output, scaled per pixel and colour channel by a learned,
      image-dependent standard deviation: Xd = out + softplus(s(features)) * z, starting at ``noise_init``
      levels of 255. Noise fed at the input reaches the three colours through shared convolutions, so its
      grain comes out correlated across them (grey); real sensor noise is independent per channel, and an SR
      net trained on grey grain learns to remove only that. ``forward(x, noise)`` takes the noise explicitly
      so ``degrade`` can seed it per image and tile exactly.
    - ``jpeg_quality``: the output (noise included) goes through a JPEG codec at that quality
      (:mod:`dsgan_cli.method.codec`), its blocks on the whole image's grid from ``origin`` (training crops:
      a random phase).
    - ``noise_mix``: the output noise's colour channels are mixed with their mean by one learned share ``w``
      (:meth:`colour_mix`), the same for every pixel: grain from independent per channel (the start) to grey,
      as a camera's demosaicing and denoising leave it. One number: a free 3 x 3 mix drifted where the GAN's
      pull on it is weak (channel correlations of -0.4 to 0.6 learned on white per-channel noise).
    - ``noise_kernel``: the output noise is first filtered by one learned kernel (:class:`GrainKernel`, unit
      energy): grain correlated over neighbouring pixels, from nearly white (start: lag-1 correlation 0.10) to blotchy.
    - ``blur_kernel``: the input first goes through one learned blur (:class:`BlurKernel`), the same for
      every image, and the rest of G works on the blurred image. The content terms compare G's output with
      this blurred input (the reference ``forward`` returns), so they hold the colours and content without
      charging the blur; only the GAN sets it.
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        config = GeneratorConfig() if config is None else config
        if not isinstance(config, GeneratorConfig):
            raise TypeError(f"Generator takes a GeneratorConfig, got {type(config).__name__}")
        self.config = config
        self.n_res_blocks, self.channels, self.output = config.n_res_blocks, config.channels, config.output
        self.output_noise, self.jpeg_quality = config.output_noise, config.jpeg_quality
        self.blur = BlurKernel(config.blur_kernel) if config.blur_kernel else None
        conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1, padding_mode=config.padding)  # noqa: E731
        self.block_input = nn.Sequential(conv(3, config.channels), nn.PReLU())
        self.res_blocks = nn.Sequential(*[ResidualBlock(config.channels, conv) for _ in range(config.n_res_blocks)])
        self.block_output = conv(config.channels, 3)
        if config.output == "residual":
            nn.init.zeros_(self.block_output.weight)
            nn.init.zeros_(self.block_output.bias)
        if config.output_noise:
            self.noise_scale = conv(config.channels, 3)
            # Starts as content-independent grain of noise_init levels of 255; the GAN sets its level. The GAN's
            # pull on a noise level is proportional to the level itself (the mean of a first-order change
            # by z is 0), so grain that starts near 0, or is pushed there early, stays there.
            nn.init.zeros_(self.noise_scale.weight)
            nn.init.constant_(self.noise_scale.bias, math.log(math.expm1(config.noise_init / 255)))
        self.grain = GrainKernel(config.noise_kernel) if config.noise_kernel else None
        if config.noise_mix:
            # The logit of the grey share; it starts at 0.018 (channel correlation 0.01).
            self.noise_grey = nn.Parameter(torch.tensor(-4.0))

    @property
    def noise_dim(self) -> int:
        """Channels of the noise map ``forward`` takes: three with ``output_noise``, else none."""
        return 3 * self.output_noise

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel sees on each side (one per 3x3 conv; the noise-scale head is as deep)."""
        # The image reaches an output pixel through the blur and the convolutions, the noise through its kernel.
        radius = max(1 + 2 * self.n_res_blocks + 1 + self.config.blur_kernel // 2, self.config.noise_kernel // 2)
        # A JPEG block's pixels depend on each other: the whole 16-px unit must be inside the window.
        return radius + (MCU - 1 if self.jpeg_quality else 0)

    def arch(self) -> dict[str, int | float | str | bool]:
        """The configuration's fields, as stored in an exported generator file."""
        return dataclasses.asdict(self.config)

    def colour_mix(self) -> torch.Tensor:
        """The (3, 3) matrix that mixes the output noise's colour channels (``noise_mix``): (1 - w) I + w J / 3,
        w = sigmoid(``noise_grey``), rows scaled to unit length, so each channel's noise keeps unit variance and
        the channels' correlation is ``M @ M.T`` (0 at w = 0, 1 at w = 1, the same for every pair)."""
        w = torch.sigmoid(self.noise_grey.float())
        m = (1 - w) * torch.eye(3, device=w.device) + w / 3
        return m / m.norm(dim=1, keepdim=True)

    def make_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """N(0, 1) noise map (``noise_dim`` channels) for a batch like ``x`` (None when G takes no noise)."""
        if not self.noise_dim:
            return None
        n, _, h, w = x.shape
        z = torch.randn(
            (n, self.noise_dim, h, w), generator=generator, dtype=torch.float32, device=x.device if generator is None else generator.device
        )
        return z.to(x.device, x.dtype)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None, with_deterministic: bool = False, origin: tuple[int, int] | None = None
    ):
        """Xd = G(x, noise); with ``with_deterministic``, (Xd, Xd without the output noise or JPEG, the content
        reference), from one pass. The content reference is what G's content is compared with: x, or x through
        the learned blur (``blur_kernel``), which the content terms then leave free. ``origin``: where ``x``
        starts in the whole image (a tile's offset; only JPEG's blocks depend on it). Without one, (0, 0); but a
        training crop's JPEG blocks start at a random phase, as a real photo's crops do."""
        reference = x if self.blur is None else self.blur(x)
        x = reference
        features = self.res_blocks(self.block_input(x))
        r = self.block_output(features)
        out = x + r if self.output == "residual" else torch.sigmoid(r)
        deterministic = out
        if self.output_noise:
            z = (noise if noise is not None else self.make_noise(x)).to(x.dtype)
            if self.grain is not None:
                z = self.grain(z)
            if self.config.noise_mix:
                z = torch.einsum("ij,njhw->nihw", self.colour_mix().to(x.dtype), z)
            out = out + F.softplus(self.noise_scale(features)) * z
        if self.jpeg_quality:
            if origin is None and self.training:
                origin = tuple(torch.randint(0, MCU, (2,)).tolist())
            out = jpeg(out, self.jpeg_quality, origin or (0, 0))
        return (out, deterministic, reference) if with_deterministic else out


class DiscriminatorBasic(nn.Module):
    """Fully convolutional stride-1 discriminator returning one logit per pixel.

    ``norm="batch"`` is the paper's. D sees a batch of only real or only generated images at a time, and
    batch norm rescales each batch by its own statistics; the convolutions and leaky ReLUs before it scale
    with their input (but for their biases), so such a D is blind to the overall strength of the grain:
    weak and strong noise look alike to it, and the GAN cannot set the noise level. ``norm="none"`` keeps
    the strength visible (scripts/bench_sr.py, BENCHMARKS.md).
    """

    def __init__(self, in_channels: int = 3, norm: str = "batch"):
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {norm!r}")
        bn = (lambda c: nn.BatchNorm2d(c)) if norm == "batch" else (lambda c: nn.Identity())  # noqa: E731
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5, padding=2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, 128, 5, padding=2),
            bn(128),
            nn.LeakyReLU(0.2),
            nn.Conv2d(128, 256, 5, padding=2),
            bn(256),
            nn.LeakyReLU(0.2),
            nn.Conv2d(256, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Discriminator(nn.Module):
    """High-pass filter followed by :class:`DiscriminatorBasic`, built from a :class:`DiscriminatorConfig`;
    returns per-pixel logits."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        config = DiscriminatorConfig() if config is None else config
        if not isinstance(config, DiscriminatorConfig):
            raise TypeError(f"Discriminator takes a DiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.filter = FilterHigh(config.filter_kernel, gaussian=config.gaussian)
        self.net = DiscriminatorBasic(3, config.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits of ``x``'s high-pass."""
        return self.net(self.filter(x))


def cov_axes(cov: torch.Tensor) -> tuple[float, float, float]:
    """(sd along the major axis, sd along the minor axis in px, the major axis' angle in degrees counter-clockwise
    from x, y up) of a 2 x 2 covariance in (x right, y down)."""
    vals, vecs = torch.linalg.eigh(cov.double())
    angle = math.degrees(math.atan2(-float(vecs[1, 1]), float(vecs[0, 1]))) % 180
    return math.sqrt(max(float(vals[1]), 0.0)), math.sqrt(max(float(vals[0]), 0.0)), angle


def kernel_axes(kernel: torch.Tensor) -> tuple[float, float, float]:
    """:func:`cov_axes` of a 2-D kernel's weights, from their second moments about their mean."""
    k = kernel.detach().double() / float(kernel.detach().double().sum())
    ax = torch.arange(k.shape[-1], dtype=torch.float64) - (k.shape[-1] - 1) / 2
    ys, xs = torch.meshgrid(ax, ax, indexing="ij")  # rows run downwards: y down
    xs, ys = xs - (k * xs).sum(), ys - (k * ys).sum()
    xy = (k * xs * ys).sum()
    return cov_axes(torch.stack([torch.stack([(k * xs * xs).sum(), xy]), torch.stack([xy, (k * ys * ys).sum()])]))


def learned_structure(g: Generator) -> str:
    """One line on what G learned of the degradation's structure (its blur and its grain's colour correlation),
    or '' for a G without those options."""
    parts = []
    if g.blur is not None:
        major, minor, angle = kernel_axes(g.blur.kernel())
        parts.append(f"blur sd {major:.2f} x {minor:.2f} px at {angle:.0f} deg")
    if g.grain is not None:
        major, minor, angle = kernel_axes(g.grain.kernel() ** 2 / (g.grain.kernel() ** 2).sum())
        parts.append(f"grain correlation sd {major:.2f} x {minor:.2f} px at {angle:.0f} deg")
    if g.config.noise_mix:
        m = g.colour_mix().detach().double()
        parts.append(f"grain colour correlation {float((m @ m.T)[0, 1]):.2f}")
    return "; ".join(parts)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
