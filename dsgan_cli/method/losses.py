"""DSGAN losses: colour (low frequencies), perceptual (VGG19; LPIPS in lpips_alex) and GAN (high frequencies).

All subcommands that need a loss or the VGG feature extractor use this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..plumbing.errors import DsganError
from .image_sampling import diagonal_detail
from .models import FilterHigh, FilterLow
from .weights import ALEXNET, VGG19, FrozenFeatures, check_available, load_features, load_pretrained, resolve, warn_random_net

#: Names of VGG19 ``features`` layers by index (conv/relu/pool, torchvision order).
VGG19_LAYERS: dict[str, int] = {}
_block_convs = [2, 2, 4, 4, 4]
_i = 0
for _b, _n in enumerate(_block_convs, start=1):
    for _c in range(1, _n + 1):
        VGG19_LAYERS[f"conv{_b}_{_c}"] = _i
        VGG19_LAYERS[f"relu{_b}_{_c}"] = _i + 1
        _i += 2
    VGG19_LAYERS[f"pool{_b}"] = _i
    _i += 1
del _b, _n, _c, _i, _block_convs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ColorLoss(nn.Module):
    """L1 distance between low-passes of two images (box filter, 'valid' borders)."""

    def __init__(self, kernel_size: int = 5, gaussian: bool = False):
        super().__init__()
        self.low = FilterLow(kernel_size, padding="valid", gaussian=gaussian)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self.low(x.float()), self.low(y.float()))


class AddedDetailLoss(nn.Module):
    """Detail G adds deterministically: mean of max(0, local RMS of high-pass(Xd without its output noise)
    - local RMS of high-pass(Xb)), RMS over the low-pass window.

    Camera degradations remove detail (blur, compression) or add noise; they do not sharpen. The GAN
    alone can meet the real LR's high-frequency energy with ringing and sharpened edges instead of
    noise, which teaches an SR net to blur real edges (scripts/bench_sr.py). This loss leaves blur free
    (less detail costs nothing) and the output noise free (it is not in the deterministic part).
    """

    def __init__(self, kernel_size: int = 5, gaussian: bool = False):
        super().__init__()
        self.high = FilterHigh(kernel_size, gaussian=gaussian)
        self.local = FilterLow(kernel_size, gaussian=gaussian)

    def local_rms(self, x: torch.Tensor) -> torch.Tensor:
        """RMS of x's high-pass over each pixel's low-pass window (a local energy, not a pointwise magnitude:
        blur moves where the high-pass crosses zero, so a pointwise comparison would charge blur too)."""
        return self.local(self.high(x.float()) ** 2).add(1e-8).sqrt()

    def forward(self, xd_deterministic: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return F.relu(self.local_rms(xd_deterministic) - self.local_rms(xb)).mean()


class NoiseLevelLoss(nn.Module):
    """|noise level of Xd - noise level of the real LR|, each a robust estimate from the finest diagonal detail.

    The discriminator judges high-frequency energy as a whole. When the real photos hold less detail than
    the clean ones G starts from (two unpaired sets), it takes grain for excess detail and drives the output
    noise toward zero even where the real photos are noisy (measured on scripts/bench_sr.py's blur + noise
    case). The level is read where content is not: in the diagonal Haar detail (x[i,j] - x[i,j+1] - x[i+1,j]
    + x[i+1,j+1]) / 2, white noise of std s has std s while smooth content has almost none, so the lower half
    of its magnitudes is noise (Donoho's median estimator, here the mean below the median, which passes a
    gradient to every pixel in that half). Scaled so that white Gaussian noise of std s reads s.
    """

    #: E[|X| ; |X| below its median] / std for X ~ N(0, s^2): 2 * sqrt(2/pi) * (1 - exp(-q^2 / 2)), q = 0.6745.
    HALF_NORMAL_LOWER_MEAN = 0.32484

    def level(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of each image's noise level (channels together), in the image's units."""
        x = x.float()
        mag = diagonal_detail(x).abs().flatten(1)
        median = mag.kthvalue(max(1, mag.shape[1] // 2), dim=1, keepdim=True).values
        lower = (mag <= median).float()
        return ((mag * lower).sum(1) / lower.sum(1)).mean() / self.HALF_NORMAL_LOWER_MEAN

    def forward(self, xd: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.level(real)
        return (self.level(xd) - target).abs()


def check_perceptual_weights(weights: str, net: str = "vgg19") -> None:
    """Raise the error building the perceptual loss would raise for weights that cannot be had (cheap: no loading)."""
    backbone = ALEXNET if net == "lpips-alex" else VGG19
    if weights == "torchvision":
        check_available(backbone)
    elif weights != "random":
        resolve(backbone, weights)


class VGGFeatures(nn.Module):
    """Frozen VGG19 ``features`` truncated after the deepest requested layer."""

    def __init__(self, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4"), weights: str = "torchvision"):
        super().__init__()
        # Only the convolutional part: vgg19() would also build (and randomly
        # initialise) a 120M-parameter classifier that is never used.
        from torchvision.models.vgg import cfgs, make_layers

        unknown = [name for name in layers if name not in VGG19_LAYERS]
        if unknown:
            raise DsganError(f"unknown VGG19 layer {unknown[0]!r} (known: {', '.join(VGG19_LAYERS)})")
        self.layer_ids = sorted({VGG19_LAYERS[name] for name in layers})
        features_net = make_layers(cfgs["E"], batch_norm=False)
        if weights == "random":
            warn_random_net("VGG19")
        else:
            state = load_pretrained(VGG19, None if weights == "torchvision" else weights)
            load_features(features_net, state, weights, "VGG19")
        self.features = features_net[: self.layer_ids[-1] + 1]
        # In-place ReLUs would overwrite the features we tap.
        for m in self.features:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always frozen; keeps Accelerate/DDP .train() calls from changing it.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.layer_ids:
                out.append(x)
        return out


def _normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise feature vectors along channels (as LPIPS does), so layers weigh alike."""
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def perceptual_distance(feats_x: Sequence[torch.Tensor], feats_y: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the squared distance between channel-normalised features."""
    total = 0.0
    for fx, fy in zip(feats_x, feats_y):
        d = _normalize_channels(fx.float()) - _normalize_channels(fy.float())
        total = total + d.pow(2).sum(dim=1).mean()
    return total / len(feats_x)


class PerceptualLoss(FrozenFeatures):
    """VGG19 feature distance between two images in [0, 1]."""

    def __init__(self, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4"), weights: str = "torchvision"):
        super().__init__()
        self.vgg = VGGFeatures(layers, weights)
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The features the distance compares (to precompute ``y_feats``)."""
        return self.vgg(x)

    def distance(self, feats_x: Sequence[torch.Tensor], feats_y: Sequence[torch.Tensor]) -> torch.Tensor:
        """:func:`perceptual_distance` (already the batch mean)."""
        return perceptual_distance(feats_x, feats_y)


def build_perceptual(net: str, layers: Sequence[str], weights: str) -> nn.Module:
    """The perceptual loss a recipe names: ``vgg19`` (VGG19 layers) or ``lpips-alex`` (LPIPS v0.1, AlexNet)."""
    if net == "lpips-alex":
        from .lpips_alex import LPIPSAlex

        return LPIPSAlex(weights)
    if net != "vgg19":
        raise DsganError(f"perceptual.net must be 'vgg19' or 'lpips-alex', got {net!r}")
    return PerceptualLoss(layers, weights)


def gan_loss_generator(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: cross-entropy of fake logits against 'real'."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gan_loss_discriminator(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator cross-entropy: real high-passes -> 1, generated ones -> 0."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + F.binary_cross_entropy_with_logits(
        fake_logits, torch.zeros_like(fake_logits)
    )


@dataclass(frozen=True)
class LossWeights:
    """The generator objective's weights (0 turns a term off) and whether the content terms see Xd before its
    output noise; the defaults are the paper's."""

    w_color: float = 1.0
    w_gan: float = 0.005
    w_perceptual: float = 0.01
    w_added_detail: float = 0.0
    w_noise_level: float = 0.0
    content_without_noise: bool = False


class GeneratorLoss(nn.Module):
    """Weighted DSGAN generator objective; returns the total and its parts. ``kernel_size`` / ``gaussian``: the
    low-pass of the colour and added-detail terms (D's frequency separation). ``forward`` takes G's content
    reference as ``xb`` (Xb, or Xb through G's learned blur, with its graph)."""

    def __init__(
        self, weights: LossWeights = LossWeights(), perceptual: nn.Module | None = None, kernel_size: int = 5, gaussian: bool = False
    ):
        super().__init__()
        self.w_color, self.w_gan, self.w_perceptual = weights.w_color, weights.w_gan, weights.w_perceptual
        self.w_added_detail, self.w_noise_level = weights.w_added_detail, weights.w_noise_level
        self.content_without_noise = weights.content_without_noise
        self.noise_level = NoiseLevelLoss()
        self.color = ColorLoss(kernel_size, gaussian)
        self.added_detail = AddedDetailLoss(kernel_size, gaussian)
        self.perceptual = perceptual

    def forward(
        self,
        xd: torch.Tensor,
        xb: torch.Tensor,
        fake_logits: torch.Tensor,
        xb_feats: Sequence[torch.Tensor] | None = None,
        xd_deterministic: torch.Tensor | None = None,
        real: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Without output noise Xd is all deterministic.
        det = xd if xd_deterministic is None else xd_deterministic
        content = det if self.content_without_noise else xd
        # Every term but the GAN judges what G adds to its reference (G's learned blur of Xb, or Xb), not the
        # reference: cut the reference's own path to G's weights, so that only the GAN sets the blur. (The noise
        # level reads content too: left to it, blurring lowered the level more cheaply than weaker grain did.)
        through = xb - xb.detach()
        xb, det, content, level_of = xb.detach(), det - through, content - through, xd - through
        parts = {"color": self.color(content, xb), "gan": gan_loss_generator(fake_logits)}
        total = self.w_color * parts["color"] + self.w_gan * parts["gan"]
        if self.w_added_detail > 0:
            parts["added_detail"] = self.added_detail(det, xb)
            total = total + self.w_added_detail * parts["added_detail"]
        if self.w_noise_level > 0:
            parts["noise_level"] = self.noise_level(level_of, real)
            total = total + self.w_noise_level * parts["noise_level"]
        if self.perceptual is not None and self.w_perceptual > 0:
            parts["perceptual"] = self.perceptual(content, xb, xb_feats)
            total = total + self.w_perceptual * parts["perceptual"]
        return total, parts
