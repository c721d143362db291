import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import vgg19

from dsgan_cli.errors import DsganError
from dsgan_cli.losses import (
    ColorLoss,
    GeneratorLoss,
    PerceptualLoss,
    VGGFeatures,
    gan_loss_discriminator,
    gan_loss_generator,
)
from dsgan_cli.models import Discriminator, Generator

LAYERS = ("relu1_2", "relu2_2")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A VGG19 weights file made here (random init, real architecture)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in vgg19(weights=None).state_dict().items()}, str(path))
    return path


def test_color_loss_zero_for_identical_and_grows():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    loss = ColorLoss()
    assert loss(x, x).item() == 0.0
    small = loss(x + 0.01, x).item()
    big = loss(x + 0.1, x).item()
    assert 0 < small < big


def test_color_loss_ignores_zero_mean_high_frequencies():
    x = torch.full((1, 3, 20, 20), 0.5)
    checker = (torch.arange(20)[:, None] + torch.arange(20)[None, :]) % 2
    noisy = x + 0.1 * (checker.float() * 2 - 1)
    assert ColorLoss()(noisy, x).item() < 0.05 * ColorLoss()(x + 0.1, x).item()


def test_perceptual_loss_from_local_file_zero_and_grows(vgg_file):
    torch.manual_seed(0)
    loss = PerceptualLoss(LAYERS, weights=str(vgg_file))
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    small = loss((x + 0.02 * torch.randn_like(x)).clamp(0, 1), x).item()
    big = loss((x + 0.2 * torch.randn_like(x)).clamp(0, 1), x).item()
    assert 0 < small < big


def test_local_weights_are_really_loaded(vgg_file):
    from safetensors.torch import load_file

    feats = VGGFeatures(LAYERS, weights=str(vgg_file))
    stored = load_file(str(vgg_file))
    assert torch.equal(feats.features[0].weight, stored["features.0.weight"])


def test_random_weights_warn_every_time(capsys):
    VGGFeatures(LAYERS, weights="random")
    assert "random" in capsys.readouterr().err


def test_missing_pretrained_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DSGAN_OFFLINE", "1")
    with pytest.raises(DsganError, match="perceptual.weights"):
        VGGFeatures(LAYERS, weights="torchvision")


def test_bad_weights_file_fails_clearly(tmp_path):
    bad = tmp_path / "vgg.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DsganError, match="vgg.pth"):
        VGGFeatures(LAYERS, weights=str(bad))
    with pytest.raises(DsganError, match="not found"):
        VGGFeatures(LAYERS, weights=str(tmp_path / "missing.pth"))


def test_gan_losses_prefer_the_right_labels():
    high, low = torch.full((2, 1, 4, 4), 5.0), torch.full((2, 1, 4, 4), -5.0)
    assert gan_loss_generator(high) < gan_loss_generator(low)
    assert gan_loss_discriminator(high, low) < gan_loss_discriminator(low, high)
    # Stable for extreme logits (the reason for the logits form).
    assert torch.isfinite(gan_loss_discriminator(torch.full((1,), -1e4), torch.full((1,), 1e4)))


def test_gradients_reach_every_generator_parameter(vgg_file):
    torch.manual_seed(0)
    g, d = Generator(n_res_blocks=2, channels=8), Discriminator()
    crit = GeneratorLoss(perceptual=PerceptualLoss(LAYERS, weights=str(vgg_file)))
    xb = torch.rand(2, 3, 24, 24)
    xd = g(xb)
    total, parts = crit(xd, xb, d(xd))
    assert set(parts) == {"color", "gan", "perceptual"}
    total.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The perceptual network stays frozen.
    assert all(p.grad is None for p in crit.perceptual.parameters())
