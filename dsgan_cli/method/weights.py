"""Pretrained weights of VGG19 and AlexNet (perceptual losses) and Inception-v3 (FID): one lookup, one offline rule.

Every network is found the same way: an explicit local file (``perceptual.weights = PATH``,
``--inception-weights PATH``) when given; else its file in the torch hub cache
(``$TORCH_HOME/hub/checkpoints/<file>``, where torchvision and torch-fidelity keep it); else a
download into that cache, unless downloads are off. When none works the error is one line that
names the URL and how to provide the file. Files are read without unpickling code (safetensors,
or ``torch.load(weights_only=True)``). Nothing here ever returns random weights.

``DSGAN_OFFLINE``: downloads are off when it is set to anything other than ``""``, ``"0"``,
``"false"`` or ``"no"`` (case and surrounding spaces ignored), for every network alike.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..plumbing.errors import DsganError, file_error
from ..plumbing.tensor_files import load_weights_file
from ..plumbing.writes import download

OFFLINE_ENV = "DSGAN_OFFLINE"
#: Values of ``DSGAN_OFFLINE`` that leave downloads on; any other value turns them off.
ONLINE_VALUES = ("", "0", "false", "no")
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Pretrained:
    """One network's pretrained file: display name, download URL, and how a user provides it locally."""

    name: str
    url: str
    local_option: str

    @property
    def command(self) -> str:
        """Its name for `dsgan weights`: vgg19, alexnet, inception."""
        return self.name.lower().split("-")[0]

    @property
    def filename(self) -> str:
        """The file name in the URL, which is also its name in the torch hub cache."""
        return self.url.rsplit("/", 1)[1]

    @property
    def hash_prefix(self) -> str:
        """First hex digits of the file's SHA-256, carried in its name (torch hub convention)."""
        return self.filename.rsplit("-", 1)[1].split(".")[0]


_PERCEPTUAL_OPTION = 'set perceptual.weights = "/path/to/{file}" in the recipe (or --set perceptual.weights=PATH)'

#: torchvision's ImageNet VGG19 (``VGG19_Weights.IMAGENET1K_V1``).
VGG19 = Pretrained("VGG19", "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", _PERCEPTUAL_OPTION)
#: torchvision's ImageNet AlexNet (``AlexNet_Weights.IMAGENET1K_V1``), the LPIPS backbone.
ALEXNET = Pretrained("AlexNet", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", _PERCEPTUAL_OPTION)
#: torch-fidelity's Inception-v3 (converted from the TensorFlow FID graph).
INCEPTION = Pretrained(
    "Inception-v3",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    "pass it with --inception-weights PATH (or set DSGAN_INCEPTION_WEIGHTS=PATH); use --no-fid for the frequency report only",
)


def offline() -> bool:
    """True when ``DSGAN_OFFLINE`` forbids downloads (any value but "", "0", "false", "no")."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ONLINE_VALUES


def hub_cache_file(net: Pretrained) -> Path:
    """Where the torch hub cache keeps ``net``'s file (and where a download puts it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / net.filename


def how_to_provide(net: Pretrained, reason: str) -> str:
    """The one-line message saying why ``net``'s weights are missing and how to put them on this machine:
    the command that fetches and checks them, where the file goes, or the option that names a file."""
    cached = hub_cache_file(net)
    option = net.local_option.format(file=net.filename)
    return (
        f"{net.name} weights are not available ({reason}): run `dsgan weights {net.command}` with internet access "
        f"(or download {net.url} elsewhere) and put the file at {cached}, or {option}"
    )


def check_available(net: Pretrained) -> None:
    """Raise the how-to error now when ``net``'s file is not cached and downloads are off (cheap: reads nothing)."""
    if not hub_cache_file(net).is_file() and offline():
        value = os.environ.get(OFFLINE_ENV, "").strip()
        raise DsganError(how_to_provide(net, f"not in the torch hub cache and {OFFLINE_ENV}={value} forbids downloading"))


def cached_or_download(net: Pretrained) -> Path:
    """``net``'s file in the torch hub cache, downloaded there first when missing and downloads are on."""
    import urllib.error

    check_available(net)
    dest = hub_cache_file(net)
    if dest.is_file():
        return dest
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download(net.url, dest, net.hash_prefix)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
        raise DsganError(how_to_provide(net, f"download failed: {getattr(e, 'reason', None) or e}")) from None
    finally:
        socket.setdefaulttimeout(old)
    return dest


def resolve(net: Pretrained, path: str | Path | None = None) -> Path:
    """The file to load for ``net``: ``path`` when given (it must exist), else :func:`cached_or_download`."""
    if path is None:
        return cached_or_download(net)
    p = Path(path).expanduser()
    if not p.exists():
        raise file_error(p, f"{net.name} weights file not found")
    if not p.is_file():
        raise file_error(p, f"{net.name} weights path is not a file")
    return p


def load_pretrained(net: Pretrained, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """``net``'s state dict from :func:`resolve`'s file, read without unpickling code."""
    return load_weights_file(resolve(net, path), f"{net.name} weights")


def load_features(features_net: nn.Module, state: dict[str, torch.Tensor], weights: str, name: str) -> None:
    """Load a torchvision classifier's ``features`` block (whole-model or features-only file) into ``features_net``."""
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not features:  # a file holding just the features block
        features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        features_net.load_state_dict(features)
    except RuntimeError as e:
        raise DsganError(f"{weights}: not {name} weights ({str(e).splitlines()[0]})") from None


def warn_random_net(net: str) -> None:
    """Say loudly that the perceptual loss is meaningless with random weights."""
    print(
        f'warning: perceptual.weights = "random": the perceptual loss uses an untrained {net}; '
        "fine for tests, benchmarks and the demo, not for a real model",
        file=sys.stderr,
    )


class FrozenFeatures(nn.Module):
    """A frozen pretrained network and a distance on its features, for the perceptual losses.

    Subclasses give :meth:`features` (activations for images in [0, 1]) and :meth:`distance` (per image,
    or already averaged); ``forward`` is the mean distance, with the target's features precomputable
    (the G step computes Xb's once, without a graph). Never trained: ``train()`` keeps it in eval mode,
    whatever Accelerate or DDP call on it.
    """

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)

    def freeze(self) -> FrozenFeatures:
        """No gradients for the network's own weights, eval mode: call at the end of ``__init__``."""
        self.requires_grad_(False)
        return self.train(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def distance(self, feats_x: list[torch.Tensor], feats_y: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, y_feats: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Mean distance between ``x`` and ``y``; pass precomputed ``y_feats`` to skip the second pass."""
        if y_feats is None:
            with torch.no_grad():
                y_feats = self.features(y)
        return self.distance(self.features(x), y_feats).mean()
