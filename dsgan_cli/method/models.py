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

__all__ = ["GeneratorConfig", "DiscriminatorConfig", "FilterLow", "FilterHigh", "ResidualBlock", "Generator", "DiscriminatorBasic", "Discriminator", "count_parameters", "downscale"]


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


#: Generator options beyond the paper's architecture, with the paper's values as defaults.
PADDINGS = ("zeros", "reflect", "replicate")
OUTPUTS = ("sigmoid", "residual", "blur")
#: Longest block grid (``grid_period``) G and D can be told about: JPEG's is 8, video codecs' up to 64.
MAX_GRID_PERIOD = 64
#: Most noise input channels (the recipe's range).
MAX_NOISE_CHANNELS = 64
#: Normalisation between the discriminator's convolutions.
D_NORMS = ("batch", "none")
#: Largest per-pixel blur kernel (``output="blur"``): 15x15 taps already span 7 pixels each way.
MAX_BLUR_SIZE = 15


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
    noise_channels: int = 0
    blur_size: int = 5
    noise_filter: int = 1
    grid_period: int = 0

    def __post_init__(self):
        checks = (
            (isinstance(self.n_res_blocks, int) and self.n_res_blocks >= 0, "n_res_blocks must be an integer >= 0"),
            (isinstance(self.channels, int) and self.channels >= 1, "channels must be an integer >= 1"),
            (self.padding in PADDINGS, f"padding must be one of {PADDINGS}"),
            (self.output in OUTPUTS, f"output must be one of {OUTPUTS}"),
            (isinstance(self.output_noise, bool), "output_noise must be true or false"),
            (0 < self.noise_init <= 255, "noise_init must be in (0, 255]"),
            (isinstance(self.jpeg_quality, int) and 0 <= self.jpeg_quality <= 100,
             "jpeg_quality must be 0 (off) or 1 to 100"),
            (1 <= self.noise_filter <= MAX_BLUR_SIZE and self.noise_filter % 2 == 1,
             f"noise_filter must be an odd number from 1 to {MAX_BLUR_SIZE}"),
            (1 <= self.blur_size <= MAX_BLUR_SIZE and self.blur_size % 2 == 1,
             f"blur_size must be an odd number from 1 to {MAX_BLUR_SIZE}"),
            (0 <= self.noise_channels <= MAX_NOISE_CHANNELS, f"noise_channels must be 0 to {MAX_NOISE_CHANNELS}"),
            ((0 <= self.grid_period <= MAX_GRID_PERIOD) and self.grid_period != 1,
             f"grid_period must be 0 (off) or 2 to {MAX_GRID_PERIOD}"),
        )
        for ok, message in checks:
            if not ok:
                name = message.split()[0]
                raise ValueError(f"{message}, got {getattr(self, name)!r}")

    def to_json(self) -> str:
        """The fields as one JSON object (sorted keys), as stored in a file's metadata."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "GeneratorConfig":
        """The configuration a file's metadata holds; a field this version does not know is refused by name."""
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
    grid_period: int = 0
    contrast_free: bool = False

    def __post_init__(self):
        if self.norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {self.norm!r}")
        if self.filter_kernel < 1 or self.filter_kernel % 2 == 0:
            raise ValueError(f"filter_kernel must be a positive odd number, got {self.filter_kernel}")


class Generator(nn.Module):
    """DSGAN degradation generator: image in [0,1] -> degraded image in [0,1], same size.

    The defaults are the paper's network. Three options change it where the
    paper's choices were measured to fail (scripts/bench_learning.py):

    - ``padding``: zero padding shows the network where the border is; with
      the sigmoid output it drew stripes there. ``"reflect"`` gives the border
      pixels content that looks like the interior.
    - ``noise_channels``: a deterministic G has nothing to draw fresh grain
      from in flat regions; N(0, 1) channels concatenated to the input give it
      a source (as in Bulat et al. 2018). ``forward(x, noise)`` takes them
      explicitly so ``degrade`` can seed them per image and tile exactly.
    - ``output="residual"``: Xd = Xb + r with the last convolution
      initialised to zero, so G starts as the identity and never has to
      re-learn the colours through a sigmoid. Xd is not clamped here: a
      clamp has no gradient outside [0, 1], and a G pushed there once by a
      GAN step could never come back (the colour loss froze; see BENCHMARKS.md).
      Every writer clamps when it rounds to 8 bits.
    - ``output_noise``: three more N(0, 1) channels, added at the output
      scaled per pixel and colour channel by a learned, image-dependent
      standard deviation: Xd = out + softplus(s(features)) * z. Noise fed at
      the input reaches the three colours through shared convolutions, so
      its grain comes out correlated across them (grey); real sensor noise
      is independent per channel, and an SR net trained on grey grain
      learns to remove only that (scripts/bench_sr.py).
    - ``output="blur"``: Xd = a per-pixel blur of Xb, each pixel a convex
      combination (weights >= 0, summing to 1) of its ``blur_size`` x
      ``blur_size`` neighbourhood, the weights predicted from the features and
      starting as the identity. Camera degradations remove detail or add
      noise; a residual G can also sharpen and ring, and an SR net trained
      on such pairs learns to blur real edges (scripts/bench_sr.py). A
      convex filter cannot add a new extreme, so the deterministic part is
      a blur (any shape, varying across the image) by construction, and the
      noise comes from ``output_noise``.
    - ``grid_period``: JPEG and other block codecs leave artefacts on a grid
      fixed to the image's origin (8 px for JPEG), and a convolutional G has
      no way to know where that grid lies. With a period P, G (and D) also
      get the pixel's position modulo P (one-hot rows and columns, 2P
      channels); ``forward`` takes the ``origin`` of its input in the whole
      image so that tiles see the whole image's grid. Measured, it improves
      SR on JPEG data, but through D (whose first layer the one-hot
      channels dominate), not by G drawing blocks (BENCHMARKS.md).
    - ``jpeg_quality``: the output (noise included) goes through a JPEG codec
      at that quality (:mod:`dsgan_cli.method.codec`), its blocks on the
      whole image's grid from ``origin`` (training crops: a random phase).
    """

    def __init__(self, config: GeneratorConfig | None = None):
        super().__init__()
        config = GeneratorConfig() if config is None else config
        if not isinstance(config, GeneratorConfig):
            raise TypeError(f"Generator takes a GeneratorConfig, got {type(config).__name__}")
        self.config = config
        n_res_blocks, channels, padding = config.n_res_blocks, config.channels, config.padding
        noise_channels, output, output_noise = config.noise_channels, config.output, config.output_noise
        blur_size, noise_init, noise_filter = config.blur_size, config.noise_init, config.noise_filter
        grid_period, jpeg_quality = config.grid_period, config.jpeg_quality
        self.n_res_blocks, self.channels = n_res_blocks, channels
        self.padding, self.noise_channels, self.output = padding, noise_channels, output
        self.output_noise, self.blur_size, self.noise_filter = bool(output_noise), blur_size, noise_filter
        self.grid_period = grid_period
        self.jpeg_quality = int(jpeg_quality)
        conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1, padding_mode=padding)  # noqa: E731
        self.block_input = nn.Sequential(conv(3 + noise_channels + 2 * grid_period, channels), nn.PReLU())
        self.res_blocks = nn.Sequential(*[ResidualBlock(channels, conv) for _ in range(n_res_blocks)])
        if output == "blur":
            taps = blur_size * blur_size
            self.blur_weights = conv(channels, taps)
            # Starts as the identity: 99% of the weight on the centre tap, whatever the kernel size.
            nn.init.zeros_(self.blur_weights.weight)
            nn.init.zeros_(self.blur_weights.bias)
            with torch.no_grad():
                self.blur_weights.bias[taps // 2] = math.log(99.0 * (taps - 1)) if taps > 1 else 0.0
        else:
            self.block_output = conv(channels, 3)
        if output == "residual":
            nn.init.zeros_(self.block_output.weight)
            nn.init.zeros_(self.block_output.bias)
        if self.output_noise:
            self.noise_scale = conv(channels, 3)
            # Starts as content-independent grain of noise_init levels of 255; the GAN sets its level. The GAN's
            # pull on a noise level is proportional to the level itself (the mean of a first-order change
            # by z is 0), so grain that starts near 0, or is pushed there early, stays there.
            nn.init.zeros_(self.noise_scale.weight)
            nn.init.constant_(self.noise_scale.bias, math.log(math.expm1(noise_init / 255)))
            if noise_filter > 1:
                # A learned 3 -> 3 kernel structures the white noise in space and across colours: demosaicing,
                # in-camera denoising, resampling and compression leave camera grain spatially correlated and in
                # part grey. It starts as the identity (white, independent per channel).
                self.noise_colour = nn.Parameter(torch.zeros(3, 3, noise_filter, noise_filter))
                with torch.no_grad():
                    for c in range(3):
                        self.noise_colour[c, c, noise_filter // 2, noise_filter // 2] = 1.0

    @property
    def noise_dim(self) -> int:
        """Channels of the noise map ``forward`` takes: the input's, then three for the output's."""
        return self.noise_channels + 3 * self.output_noise

    @property
    def receptive_radius(self) -> int:
        """Pixels of context each output pixel sees on each side (one per 3x3 conv; the noise-scale head is as deep)."""
        convs = 1 + 2 * self.n_res_blocks + 1
        # The blur's weights at a pixel come from the convolutions there; its taps reach blur_size // 2 further
        # from the same pixel, so the two radii do not add.
        noise = self.noise_filter // 2 if self.output_noise else 0
        radius = max(convs, noise, self.blur_size // 2 if self.output == "blur" else 0)
        # A JPEG block's pixels depend on each other: the whole 16-px unit must be inside the window.
        return radius + (MCU - 1 if self.jpeg_quality else 0)

    def arch(self) -> dict[str, int | float | str | bool]:
        """The configuration's fields, as stored in an exported generator file."""
        return dataclasses.asdict(self.config)

    def make_noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """N(0, 1) noise map (``noise_dim`` channels) for a batch like ``x`` (None when G takes no noise)."""
        if not self.noise_dim:
            return None
        n, _, h, w = x.shape
        z = torch.randn((n, self.noise_dim, h, w), generator=generator, dtype=torch.float32,
                        device=x.device if generator is None else generator.device)
        return z.to(x.device, x.dtype)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, with_deterministic: bool = False,
                origin: tuple[int, int] | None = None):
        """Xd = G(x, noise); with ``with_deterministic``, (Xd, Xd without the output noise or JPEG), from one pass.
        ``origin``: where ``x`` starts in the whole image (a tile's offset; only a block grid and JPEG's blocks
        depend on it). Without one, (0, 0); but a training crop's JPEG blocks start at a random phase, as a
        real photo's crops do."""
        inp = [x]
        if self.noise_dim:
            z = (noise if noise is not None else self.make_noise(x)).to(x.dtype)
        if self.noise_channels:
            inp.append(z[:, :self.noise_channels])
        if self.grid_period:
            inp.append(grid_phase(x, self.grid_period, origin or (0, 0)))
        features = self.res_blocks(self.block_input(torch.cat(inp, dim=1) if len(inp) > 1 else x))
        if self.output == "blur":
            out = self.local_blur(x, self.blur_weights(features))
        else:
            r = self.block_output(features)
            out = x + r if self.output == "residual" else torch.sigmoid(r)
        deterministic = out
        if self.output_noise:
            out = out + F.softplus(self.noise_scale(features)) * self.coloured(z[:, self.noise_channels:])
        if self.jpeg_quality:
            if origin is None and self.training:
                origin = tuple(torch.randint(0, MCU, (2,)).tolist())
            out = jpeg(out, self.jpeg_quality, origin or (0, 0))
        return (out, deterministic) if with_deterministic else out

    def coloured(self, z: torch.Tensor) -> torch.Tensor:
        """The output noise through its learned 3 -> 3 kernel (spatial and cross-channel correlation), each output
        channel's kernel scaled to unit L2 norm so that white N(0, 1) stays of variance 1 per channel whatever its
        structure (the level is ``noise_scale``'s alone); ``z`` as is without one."""
        if self.noise_filter == 1:
            return z
        k = self.noise_filter
        w = self.noise_colour / self.noise_colour.flatten(1).norm(dim=1).clamp_min(1e-8).view(3, 1, 1, 1)
        # Replicate: noise maps of any size, even smaller than the kernel.
        return F.conv2d(F.pad(z, (k // 2,) * 4, mode="replicate"), w.to(z.dtype))


    def local_blur(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Each pixel of ``x`` replaced by the softmax(``logits``)-weighted mean of its neighbourhood."""
        k = self.blur_size
        n, c, h, w = x.shape
        # Replicate works for images of any size (reflect needs more pixels than the radius).
        patches = F.unfold(F.pad(x, (k // 2,) * 4, mode="replicate"), k).view(n, c, k * k, h, w)
        # Softmax in at least fp32: in half precision the weights would not sum to 1.
        weights = torch.softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(x.dtype)
        return (patches * weights[:, None]).sum(dim=2)


def grid_phase(x: torch.Tensor, period: int, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Each pixel's row and column modulo ``period``, one-hot: (n, 2 * period, h, w) like ``x``'s batch, dtype, device."""
    n, _, h, w = x.shape
    rows = F.one_hot((torch.arange(h, device=x.device) + origin[0]) % period, period).to(x.dtype)  # (h, P)
    cols = F.one_hot((torch.arange(w, device=x.device) + origin[1]) % period, period).to(x.dtype)  # (w, P)
    grid = torch.cat([rows.t()[:, :, None].expand(period, h, w), cols.t()[:, None, :].expand(period, h, w)])
    return grid.expand(n, -1, -1, -1)



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
    """High-pass filter followed by :class:`DiscriminatorBasic`; returns per-pixel logits.

    With ``grid_period`` P, D also sees each pixel's position modulo P (see :class:`Generator`), from the
    ``origin`` its crop has on the grid, so it can ask for block artefacts at the grid's phase, not just
    anywhere."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        config = DiscriminatorConfig() if config is None else config
        if not isinstance(config, DiscriminatorConfig):
            raise TypeError(f"Discriminator takes a DiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.filter = FilterHigh(config.filter_kernel, gaussian=config.gaussian)
        self.contrast_free = config.contrast_free
        self.grid_period = config.grid_period
        self.net = DiscriminatorBasic(3 + 2 * config.grid_period, config.norm)

    def forward(self, x: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Per-pixel logits; ``origin``: where ``x`` starts on the block grid (its crop's phase)."""
        high = self.filter(x)
        if self.contrast_free:
            high = local_contrast_normalise(high, self.filter.low.kernel_size)
        if self.grid_period:
            high = torch.cat([high, grid_phase(high, self.grid_period, origin)], dim=1)
        return self.net(high)


#: Local RMS (in 0-1 units) below which D's contrast-free view does not amplify: about 2 levels of 255, so that
#: the rounding of flat 8-bit areas does not come out as full-strength texture.
CONTRAST_FLOOR = 2 / 255


def local_contrast_normalise(high: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``high`` divided by its local RMS (over colours and a ``kernel_size`` window, floored): the pattern of the
    detail without its strength, which differs between two photo collections more than their degradations do."""
    energy = F.avg_pool2d(high.float().pow(2).mean(1, keepdim=True), kernel_size, 1, kernel_size // 2, count_include_pad=False)
    return (high.float() / (energy + CONTRAST_FLOOR**2).sqrt()).to(high.dtype)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
