"""Pretrained weights (VGG19, AlexNet, Inception-v3): one DSGAN_OFFLINE rule, the hub cache, downloads, clear errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

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


# ----------------------------------------------------------------------------- dsgan weights


@pytest.mark.slow
def test_weights_command_offline_says_what_to_do_in_its_first_line(tmp_path):
    from conftest import run_cli

    res = run_cli("weights", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: VGG19 weights are not available"), res.stderr
    assert "`dsgan weights vgg19`" in lines[0] and "--set perceptual.weights=PATH" in lines[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / weights.VGG19.filename) in lines[0]
    assert not (tmp_path / "torch").exists() or not any((tmp_path / "torch").rglob("*.pth"))


@pytest.mark.slow
def test_train_offline_without_perceptual_weights_first_says_what_to_do(tmp_path, tiny_recipe):
    from conftest import run_cli, write_images

    write_images(tmp_path / "hr", 4, 32)
    write_images(tmp_path / "lr", 4, 16, seed=1)
    res = run_cli(
        "train",
        tiny_recipe,
        "--no-progress",
        "--set",
        f"data.hr_dir={tmp_path / 'hr'}",
        "--set",
        f"data.lr_dir={tmp_path / 'lr'}",
        "--set",
        f"train.output_dir={tmp_path / 'run'}",
        "--set",
        'perceptual.weights="torchvision"',
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: VGG19 weights are not available"), res.stderr
    assert "`dsgan weights vgg19`" in errors[0] and "--set perceptual.weights=PATH" in errors[0]
    assert not (tmp_path / "run").exists(), "a run that cannot train must not leave a run folder"


@pytest.fixture
def served_vgg19(tmp_path, monkeypatch):
    """A VGG19 file this test makes, 'served' by a fake download under a name carrying its own SHA-256 prefix
    (as torchvision's names carry theirs); returns (file, the downloads made)."""
    from torchvision.models.vgg import cfgs, make_layers

    from dsgan_cli.commands import weights as command
    from dsgan_cli.plumbing.reads import file_sha256

    torch.manual_seed(5)
    src = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"], batch_norm=False).state_dict().items()}, src)
    net = weights.Pretrained("VGG19", f"https://example.invalid/vgg19-{file_sha256(src)[:8]}.pth", weights.VGG19.local_option)
    monkeypatch.setitem(command.NETS, "vgg19", net)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("DSGAN_OFFLINE", "0")
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(src.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    return src, net, calls


def run_main(*argv) -> int:
    from dsgan_cli.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code


def test_weights_command_downloads_checks_and_then_finds_the_file_cached(served_vgg19, capsys, monkeypatch):
    src, net, calls = served_vgg19
    assert run_main("weights", "vgg19") == 0
    dest = weights.hub_cache_file(net)
    assert dest.read_bytes() == src.read_bytes() and calls == [(net.url, net.hash_prefix)]
    err = capsys.readouterr().err
    assert f"VGG19: downloading {net.url} -> {dest}" in err and "downloaded, SHA-256 prefix checked; loads into VGG19" in err
    # Cached now: checked, not downloaded again, even offline.
    monkeypatch.setenv("DSGAN_OFFLINE", "1")
    assert run_main("weights", "vgg19") == 0
    assert len(calls) == 1 and "(cached; loads into VGG19)" in capsys.readouterr().err


def test_weights_command_refuses_a_damaged_or_wrong_file(served_vgg19, capsys, monkeypatch):
    src, net, _ = served_vgg19
    assert run_main("weights", "vgg19") == 0
    dest = weights.hub_cache_file(net)
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.write_bytes(bytes(data))
    capsys.readouterr()
    assert run_main("weights", "vgg19") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {dest}: damaged VGG19 weights") and "delete it" in err[0]
    # Another network's weights under the right name (its prefix matching) fail the loading check.
    from dsgan_cli.plumbing.reads import file_sha256

    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, src)
    wrong = weights.Pretrained("VGG19", f"https://example.invalid/vgg19-{file_sha256(src)[:8]}.pth", net.local_option)
    from dsgan_cli.commands import weights as command

    monkeypatch.setitem(command.NETS, "vgg19", wrong)
    assert run_main("weights", "vgg19") == 2
    assert "not VGG19 weights" in capsys.readouterr().err
