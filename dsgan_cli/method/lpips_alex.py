"""LPIPS v0.1 with the AlexNet backbone: the perceptual loss of the original DSGAN implementation.

Distance (Zhang et al., 2018): inputs in [0, 1] are mapped to [-1, 1] and
shifted/scaled per channel; AlexNet ``features`` are tapped after its five
ReLUs; each tap is unit-normalised along channels, the squared difference is
weighted per channel by the learned linear layer, averaged over space, and
the five layers are summed. The loss is the mean over the batch.

Weights: the linear layers are the v0.1 ``alex.pth`` shipped inside the
``lpips`` wheel (read without unpickling code); the backbone is torchvision's
ImageNet AlexNet, found by :mod:`dsgan_cli.method.weights` (a local file, the torch hub cache, or a
download there unless ``DSGAN_OFFLINE`` is set), or ``random`` (tests only, with a warning).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..engines.checkpoint import load_weights_file
from ..plumbing.errors import DsganError

#: ``features`` indices of AlexNet's five ReLUs, the layers LPIPS compares.
TAPS = (1, 4, 7, 9, 11)
CHANNELS = (64, 192, 384, 256, 256)
#: LPIPS v0.1 input normalisation (after mapping [0, 1] to [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def lpips_linear_weights() -> dict[str, torch.Tensor]:
    """The v0.1 AlexNet linear-layer weights from the installed ``lpips`` package."""
    try:
        import lpips
    except ImportError:
        raise DsganError("perceptual.net = \"lpips-alex\" needs the lpips package: pip install lpips") from None
    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    state = load_weights_file(path, "LPIPS v0.1 linear layers")
    try:
        return {f"{i}": state[f"lin{i}.model.1.weight"].float() for i in range(len(TAPS))}
    except KeyError as e:
        raise DsganError(f"{path}: not the LPIPS AlexNet linear layers (no {e})") from None


def alexnet_features(weights: str) -> nn.Sequential:
    """AlexNet's ``features`` block up to its last ReLU, with the weights ``weights`` names."""
    from torchvision.models import alexnet

    from .weights import ALEXNET, load_features, load_pretrained, warn_random_net

    features = alexnet(weights=None).features[: TAPS[-1] + 1]
    if weights == "random":
        warn_random_net("AlexNet")
        return features
    state = load_pretrained(ALEXNET, None if weights == "torchvision" else weights)
    load_features(features, state, weights, "AlexNet")
    return features


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 (AlexNet) distance between images in [0, 1]; frozen."""

    def __init__(self, weights: str = "torchvision"):
        super().__init__()
        self.features_net = alexnet_features(weights)
        for m in self.features_net:
            if isinstance(m, nn.ReLU):
                m.inplace = False  # in-place ReLUs would overwrite the tapped features
        lins = lpips_linear_weights()
        for i, c in enumerate(CHANNELS):
            # Fixed weights, not trained here: buffers, so no optimiser or DDP ever sees them.
            self.register_buffer(f"lin{i}", lins[str(i)].view(1, c, 1, 1), persistent=False)
        self.features_net.requires_grad_(False)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> "LPIPSAlex":
        # Always frozen; keeps Accelerate/DDP .train() calls from changing it.
        return super().train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """AlexNet activations after the five ReLUs for images in [0, 1]."""
        x = (2 * x - 1 - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features_net):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
        """Per-image LPIPS distance, shape (N,)."""
        total = 0.0
        for i, (fx, fy) in enumerate(zip(feats_x, feats_y)):
            w = getattr(self, f"lin{i}")
            fx, fy = fx.float(), fy.float()
            nx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + ((nx - ny).pow(2) * w).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, y_feats: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean LPIPS distance over the batch; pass precomputed ``y_feats`` to skip the second pass."""
        if y_feats is None:
            with torch.no_grad():
                y_feats = self.features(y)
        return self.distance(self.features(x), y_feats).mean()
