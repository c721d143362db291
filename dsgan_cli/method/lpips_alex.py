"""LPIPS v0.1 with the AlexNet backbone (the original DSGAN implementation's perceptual loss), from the ``lpips`` package.

The network, its input scaling, the feature normalisation and the linear layers are the ``lpips``
package's own (``lpips.LPIPS(net="alex")``); only the weights are loaded here, because the package
would download AlexNet through torchvision and unpickle its ``alex.pth`` with a plain ``torch.load``.
Instead the linear layers are the v0.1 ``alex.pth`` inside the installed wheel, read without
unpickling code, and the backbone is torchvision's ImageNet AlexNet found by
:mod:`dsgan_cli.method.weights` (a local file, the torch hub cache, or a download there unless
``DSGAN_OFFLINE`` is set), or ``random`` (tests only, with a warning).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..plumbing.errors import DsganError
from ..plumbing.tensor_files import load_weights_file
from .weights import FrozenFeatures

#: Layers LPIPS compares: AlexNet's five ReLUs.
N_LAYERS = 5


def _lpips():
    """The ``lpips`` module, or a one-line error naming the package to install."""
    try:
        import lpips
    except ImportError:
        raise DsganError('perceptual.net = "lpips-alex" needs the lpips package: pip install lpips') from None
    return lpips


def lpips_linear_weights() -> dict[str, torch.Tensor]:
    """The v0.1 AlexNet linear-layer weights from the installed ``lpips`` package, keyed as in ``lpips.LPIPS``."""
    path = Path(_lpips().__file__).parent / "weights" / "v0.1" / "alex.pth"
    state = load_weights_file(path, "LPIPS v0.1 linear layers")
    keys = [f"lin{i}.model.1.weight" for i in range(N_LAYERS)]
    missing = [k for k in keys if k not in state]
    if missing:
        raise DsganError(f"{path}: not the LPIPS AlexNet linear layers (no {missing[0]})")
    return {k: state[k].float() for k in keys}


def alexnet_features(weights: str) -> nn.Sequential:
    """torchvision AlexNet's ``features`` block with the weights ``weights`` names."""
    from torchvision.models import alexnet

    from .weights import ALEXNET, load_features, load_pretrained, warn_random_net

    features = alexnet(weights=None).features
    if weights == "random":
        warn_random_net("AlexNet")
        return features
    load_features(features, load_pretrained(ALEXNET, None if weights == "torchvision" else weights), weights, "AlexNet")
    return features


class LPIPSAlex(FrozenFeatures):
    """LPIPS v0.1 (AlexNet) distance between images in [0, 1]; frozen."""

    def __init__(self, weights: str = "torchvision"):
        super().__init__()
        lpips = _lpips()
        self._normalize, self._average = lpips.normalize_tensor, lpips.spatial_average
        # pretrained=False, pnet_rand=True: the package builds the layers and loads nothing itself.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its torchvision call uses the deprecated `pretrained`
            self.net = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
        features = alexnet_features(weights)
        for slice_ in (self.net.net.slice1, self.net.net.slice2, self.net.net.slice3, self.net.net.slice4, self.net.net.slice5):
            for index, layer in slice_.named_children():
                layer.load_state_dict(features[int(index)].state_dict())
        lins = lpips_linear_weights()
        for i, lin in enumerate(self.net.lins):
            lin.model[-1].weight.data.copy_(lins[f"lin{i}.model.1.weight"])
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """AlexNet activations after the five ReLUs for images in [0, 1]."""
        return list(self.net.net(self.net.scaling_layer(2 * x - 1)))

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
        """Per-image LPIPS distance, shape (N,)."""
        total = 0.0
        for lin, fx, fy in zip(self.net.lins, feats_x, feats_y):
            diff = (self._normalize(fx.float()) - self._normalize(fy.float())) ** 2
            total = total + self._average(lin(diff), keepdim=False).flatten()
        return total
