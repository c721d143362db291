"""``dsgan weights``: put the pretrained networks into the torch hub cache, checked, before a run needs them.

The files are the ones :mod:`dsgan_cli.method.weights` looks up (torchvision's VGG19 and AlexNet for the
perceptual losses, torch-fidelity's Inception-v3 for FID): a cached file is checked, a missing one is
downloaded there (the SHA-256 prefix in its name is checked by the download), then each is loaded into
its network, so a file that is truncated or is another network's fails here, not an hour into training.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..method import weights as pretrained
from ..plumbing.errors import DsganError, file_error
from ..plumbing.reads import file_sha256

#: The networks by the name the command takes.
NETS = {"vgg19": pretrained.VGG19, "alexnet": pretrained.ALEXNET, "inception": pretrained.INCEPTION}
#: What `dsgan weights` fetches without names: the perceptual networks the recipes train with.
DEFAULT = ("vgg19", "alexnet")


def load_check(name: str, path: Path) -> None:
    """Load ``path`` into network ``name`` the way training and eval do (raises the loader's one-line error)."""
    if name == "vgg19":
        from ..method.losses import VGGFeatures

        VGGFeatures(("relu5_4",), weights=str(path))  # the whole feature stack: every layer's shape is checked
    elif name == "alexnet":
        from ..method.lpips_alex import LPIPSAlex

        LPIPSAlex(str(path))
    else:
        from ..metrics.fid import InceptionWeights, build_extractor

        build_extractor(InceptionWeights("file", path, "sha256:" + file_sha256(path)))


def fetch(name: str, say=print) -> Path:
    """Network ``name``'s file in the torch hub cache: checked when there, else downloaded (with progress at a
    terminal); then loaded into its network. Returns its path."""
    net = NETS[name]
    dest = pretrained.hub_cache_file(net)
    if dest.is_file():
        if not file_sha256(dest).startswith(net.hash_prefix):
            raise file_error(
                dest,
                f"damaged {net.name} weights: its SHA-256 does not start with {net.hash_prefix} as its "
                f"name says; delete it and run `dsgan weights {name}` again",
            )
        what = "cached"
    else:
        pretrained.check_available(net)  # offline: the what-to-do line comes first, not a download that cannot start
        say(f"{net.name}: downloading {net.url} -> {dest}")
        pretrained.cached_or_download(net)
        what = "downloaded, SHA-256 prefix checked"
    load_check(name, dest)
    say(f"{net.name}: {dest} ({what}; loads into {net.name})")
    return dest


def fetch_all(names: list[str]) -> list[Path]:
    """:func:`fetch` each of ``names`` (default :data:`DEFAULT`); unknown names are a usage error first."""
    names = list(names) or list(DEFAULT)
    unknown = [n for n in names if n not in NETS]
    if unknown:
        raise DsganError(f"unknown network {unknown[0]!r} (known: {', '.join(NETS)})")
    return [fetch(n, say=lambda line: print(line, file=sys.stderr, flush=True)) for n in names]
