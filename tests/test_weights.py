"""Pretrained weights (VGG19, AlexNet, Inception-v3): one DSGAN_OFFLINE rule, the hub cache, downloads, clear errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from dsgan_cli.method import weights
from dsgan_cli.method.losses import VGGFeatures, check_perceptual_weights
from dsgan_cli.method.lpips_alex import LPIPSAlex
from dsgan_cli.metrics import fid
from dsgan_cli.plumbing.errors import DsganError

#: Each backbone built the way the subcommands build it, with its default (pretrained) weights.
BUILDERS = {
    "VGG19": lambda: VGGFeatures(("relu1_2",), weights="torchvision"),
    "AlexNet": lambda: LPIPSAlex("torchvision"),
    "Inception-v3": lambda: fid.resolve_weights(None),
}
OFFLINE_VALUES = ["1", "yes", "true", "TRUE", " on ", "offline"]
ONLINE_VALUES = ["", "0", "false", "no", " No "]


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, no Inception path in the environment, and downloads that record their calls."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    calls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


@pytest.mark.parametrize("value", OFFLINE_VALUES)
@pytest.mark.parametrize("net", list(BUILDERS))
def test_offline_values_forbid_downloads_for_every_backbone(empty_hub, monkeypatch, net, value):
    monkeypatch.setenv("DSGAN_OFFLINE", value)
    assert weights.offline()
    with pytest.raises(DsganError) as e:
        BUILDERS[net]()
    msg = str(e.value)
    assert msg.startswith(f"{net} weights are not available") and "forbids downloading" in msg and "\n" not in msg
    assert empty_hub == []  # no download was even tried


@pytest.mark.parametrize("value", ONLINE_VALUES)
@pytest.mark.parametrize("net", list(BUILDERS))
def test_online_values_try_the_download_for_every_backbone(empty_hub, monkeypatch, net, value):
    monkeypatch.setenv("DSGAN_OFFLINE", value)
    assert not weights.offline()
    with pytest.raises(DsganError, match=f"^{net} weights are not available \\(download failed: no network here\\)"):
        BUILDERS[net]()
    spec = {"VGG19": weights.VGG19, "AlexNet": weights.ALEXNET, "Inception-v3": weights.INCEPTION}[net]
    assert empty_hub == [(spec.url, str(weights.hub_cache_file(spec)), spec.hash_prefix)]


def test_unset_offline_variable_means_online(empty_hub, monkeypatch):
    monkeypatch.delenv("DSGAN_OFFLINE", raising=False)
    assert not weights.offline()
    with pytest.raises(DsganError, match="download failed"):
        VGGFeatures(("relu1_2",), weights="torchvision")


def test_urls_and_file_names_are_the_libraries_own():
    from torchvision.models import AlexNet_Weights, VGG19_Weights

    assert weights.VGG19.url == VGG19_Weights.IMAGENET1K_V1.url
    assert weights.ALEXNET.url == AlexNet_Weights.IMAGENET1K_V1.url
    assert weights.VGG19.hash_prefix == "dcbb9e9d" and weights.ALEXNET.hash_prefix == "7be5be79"
    assert weights.INCEPTION.filename == "weights-inception-2015-12-05-6726825d.pth"
    assert weights.INCEPTION.hash_prefix == "6726825d"


def test_a_download_lands_in_the_hub_cache_and_is_loaded_once(tmp_path, monkeypatch):
    """Online, a missing file is downloaded into the torch hub cache, loaded, and found there the next time."""
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DSGAN_OFFLINE", "0")
    torch.manual_seed(3)
    served = {f"features.{k}": v for k, v in make_layers(cfgs["E"], batch_norm=False).state_dict().items()}
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        torch.save(served, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = VGGFeatures(("relu1_2",), weights="torchvision")
    assert torch.equal(first.features[0].weight, served["features.0.weight"])
    assert weights.hub_cache_file(weights.VGG19).is_file() and calls == [weights.VGG19.url]
    monkeypatch.setenv("DSGAN_OFFLINE", "1")  # now cached: offline is fine and nothing is downloaded again
    second = VGGFeatures(("relu1_2",), weights="torchvision")
    assert torch.equal(second.features[0].weight, served["features.0.weight"]) and len(calls) == 1


def test_cheap_check_follows_the_same_rule(empty_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("DSGAN_OFFLINE", "yes")
    for net, name in (("vgg19", "VGG19"), ("lpips-alex", "AlexNet")):
        with pytest.raises(DsganError, match=f"^{name} weights are not available.*DSGAN_OFFLINE=yes forbids"):
            check_perceptual_weights("torchvision", net)
        with pytest.raises(DsganError, match=f"missing.pth: {name} weights file not found"):
            check_perceptual_weights(str(tmp_path / "missing.pth"), net)
        check_perceptual_weights("random", net)  # asked for explicitly: nothing to find
    monkeypatch.setenv("DSGAN_OFFLINE", "no")
    check_perceptual_weights("torchvision", "vgg19")  # online: the download happens when the loss is built
    assert empty_hub == []


def test_explicit_path_is_used_even_offline_and_never_random(tmp_path, monkeypatch, empty_hub):
    monkeypatch.setenv("DSGAN_OFFLINE", "1")
    state = fid.random_state_dict()
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    found = fid.resolve_weights(path, allow_random=True)  # a given file wins over --random-inception
    assert found.kind == "file" and found.path == path
    assert weights.resolve(weights.INCEPTION, path) == path
    with pytest.raises(DsganError, match="is not a file"):
        weights.resolve(weights.VGG19, tmp_path)
    assert empty_hub == []
