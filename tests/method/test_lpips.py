"""LPIPS v0.1 (AlexNet) perceptual loss, pinned against the ``lpips`` package on weights made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli, synthetic_face_like, write_images

from dsgan_cli.method.losses import GeneratorLoss, build_perceptual
from dsgan_cli.method.lpips_alex import LPIPSAlex
from dsgan_cli.method.models import Discriminator, Generator, GeneratorConfig
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError

lpips = pytest.importorskip("lpips")


@pytest.fixture(scope="module")
def reference_and_file(tmp_path_factory):
    """The lpips package's model with a random AlexNet trunk, and that trunk saved in torchvision's layout."""
    torch.manual_seed(0)
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    trunk = {}
    for key, value in ref.net.state_dict().items():  # net.sliceK.N.weight -> features.N.weight
        _, index, kind = key.split(".")
        trunk[f"features.{index}.{kind}"] = value.clone()
    path = tmp_path_factory.mktemp("alex") / "alexnet-test.pth"
    torch.save(trunk, path)
    return ref, path


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """Structured images in [0, 1], (n, 3, size, size)."""
    return torch.stack([torch.from_numpy(synthetic_face_like(size, seed + i)).permute(2, 0, 1).float() / 255 for i in range(n)])


def test_distance_equals_the_lpips_package(reference_and_file):
    ref, path = reference_and_file
    ours = LPIPSAlex(weights=str(path))
    x = images(3, 64, 1)
    y = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    z = images(3, 64, 50)  # other content: a larger distance
    with torch.no_grad():
        for other in (y, z):
            want = ref(x, other, normalize=True).flatten()
            got = ours.distance(ours.features(x), ours.features(other))
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (got, want)
            assert ours(x, other).item() == pytest.approx(want.mean().item(), rel=1e-5)
        assert ours(x, x).item() == pytest.approx(0.0, abs=1e-7)
        assert ours(x, y).item() < ours(x, z).item()


def test_linear_layers_come_from_the_lpips_wheel(reference_and_file):
    _, path = reference_and_file
    ours = LPIPSAlex(weights=str(path))
    wheel = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu", weights_only=True)
    for i in range(5):
        assert torch.equal(ours.net.lins[i].model[-1].weight, wheel[f"lin{i}.model.1.weight"])
    # ...and the backbone from the file given, not the random init the package was built with.
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(dict(ours.net.net.slice5.named_children())["10"].weight, state["features.10.weight"])
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    ours.train()
    assert not ours.training, "a frozen feature net must stay in eval mode whatever train() asks"


def test_generator_gets_gradients_and_lpips_stays_frozen(reference_and_file):
    _, path = reference_and_file
    torch.manual_seed(0)
    g, d = Generator(GeneratorConfig(n_res_blocks=1, channels=8)), Discriminator()
    crit = GeneratorLoss(perceptual=build_perceptual("lpips-alex", ["relu1_2"], str(path)))
    xb = torch.rand(2, 3, 32, 32)
    xd = g(xb)
    total, parts = crit(xd, xb, d(xd), crit.perceptual.features(xb))
    assert parts["perceptual"].item() > 0
    total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    assert not any(p.requires_grad for p in crit.perceptual.parameters())


def test_offline_without_cached_alexnet_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DSGAN_OFFLINE", "1")
    with pytest.raises(DsganError) as e:
        LPIPSAlex("torchvision")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "perceptual.weights" in msg and "DSGAN_OFFLINE=1" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_wrong_or_broken_backbone_files_fail_clearly(tmp_path):
    from torchvision.models import vgg11

    vgg = tmp_path / "vgg.pth"
    torch.save(vgg11(weights=None).state_dict(), vgg)
    with pytest.raises(DsganError, match="not AlexNet weights"):
        LPIPSAlex(str(vgg))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    with pytest.raises(DsganError, match="bad.pth"):
        LPIPSAlex(str(bad))


def test_recipe_rejects_images_too_small_for_alexnet(tiny_recipe):
    with pytest.raises(DsganError, match="at least 31"):
        load_recipe(tiny_recipe, ["perceptual.net=lpips-alex"])  # 16-pixel LR images
    with pytest.raises(DsganError, match="perceptual.net"):
        load_recipe(tiny_recipe, ["perceptual.net=alex"])


@pytest.mark.slow
def test_train_with_lpips_alex_through_the_cli(tmp_path, tiny_recipe, reference_and_file):
    _, path = reference_and_file
    data = tmp_path / "data"
    write_images(data / "hr", 4, 64, seed=0)
    write_images(data / "lr", 4, 32, seed=1, noise=12)
    sets = [
        "data.hr_size=64",
        "data.lr_size=32",
        f"data.hr_dir={data / 'hr'}",
        f"data.lr_dir={data / 'lr'}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.iterations=2",
        "train.batch_size=2",
        "perceptual.net=lpips-alex",
        f"perceptual.weights={path}",
    ]
    res = run_cli("train", tiny_recipe, *[a for s in sets for a in ("--set", s)], "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["loss_perceptual"] > 0 for r in records)
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["perceptual"]["net"] == "lpips-alex"


@pytest.mark.slow
def test_train_checks_the_chosen_backbone_before_creating_the_run(tmp_path, monkeypatch, tiny_recipe):
    """Offline without cached weights, `train` fails before it creates anything, naming the right network."""
    from dsgan_cli.method.losses import check_perceptual_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DsganError, match="AlexNet"):
        check_perceptual_weights("torchvision", "lpips-alex")
    with pytest.raises(DsganError, match="VGG19"):
        check_perceptual_weights("torchvision", "vgg19")
    write_images(tmp_path / "hr", 4, 64)
    write_images(tmp_path / "lr", 4, 32, seed=3)
    out = tmp_path / "run"
    proc = run_cli(
        "train",
        tiny_recipe,
        "--set",
        f"data.hr_dir={tmp_path / 'hr'}",
        "--set",
        f"data.lr_dir={tmp_path / 'lr'}",
        "--set",
        "data.hr_size=64",
        "--set",
        "data.lr_size=32",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "perceptual.net=lpips-alex",
        "--set",
        "perceptual.weights=torchvision",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "AlexNet" in proc.stderr and not out.exists()
