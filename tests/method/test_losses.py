import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.models import vgg19

from dsgan_cli.method.losses import (
    ColorLoss,
    GeneratorLoss,
    LossWeights,
    PerceptualLoss,
    VGGFeatures,
    gan_loss_discriminator,
    gan_loss_generator,
)
from dsgan_cli.method.models import Discriminator, Generator, GeneratorConfig
from dsgan_cli.plumbing.errors import DsganError

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


@pytest.mark.slow
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
    # Refused before any download is tried, with the way out in the message.
    with pytest.raises(DsganError, match="DSGAN_OFFLINE=1 forbids downloading.*perceptual.weights"):
        VGGFeatures(LAYERS, weights="torchvision")
    # Pretrained weights are the default: never a silent fall-back to random ones.
    for make in (lambda: VGGFeatures(LAYERS), lambda: PerceptualLoss(LAYERS)):
        with pytest.raises(DsganError, match="forbids downloading"):
            make()


def test_pretrained_weights_are_read_from_the_torch_hub_cache(tmp_path, monkeypatch):
    """Where torchvision's download lands is where the offline check and the loader look."""
    from torchvision.models.vgg import cfgs, make_layers

    from dsgan_cli.method.weights import VGG19

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("DSGAN_OFFLINE", "1")
    torch.manual_seed(8)
    block = make_layers(cfgs["E"], batch_norm=False)[:4]  # the first two convolutions are enough here
    cached = tmp_path / "hub" / "checkpoints" / VGG19.filename
    cached.parent.mkdir(parents=True)
    full = make_layers(cfgs["E"], batch_norm=False).state_dict()
    full.update({k: v for k, v in block.state_dict().items()})
    torch.save({f"features.{k}": v for k, v in full.items()}, cached)
    feats = VGGFeatures(("relu1_2",), weights="torchvision")
    assert torch.equal(feats.features[0].weight, block[0].weight), "the cached pretrained weights were not loaded"


def test_bad_weights_file_fails_clearly(tmp_path):
    bad = tmp_path / "vgg.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DsganError, match="vgg.pth: cannot read VGG19 weights"):
        VGGFeatures(LAYERS, weights=str(bad))
    with pytest.raises(DsganError, match="VGG19 weights file not found"):
        VGGFeatures(LAYERS, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(DsganError, match="unknown VGG19 layer 'relu9_9'"):
        VGGFeatures(("relu1_1", "relu9_9"), weights="random")


def test_gan_losses_prefer_the_right_labels():
    high, low = torch.full((2, 1, 4, 4), 5.0), torch.full((2, 1, 4, 4), -5.0)
    assert gan_loss_generator(high) < gan_loss_generator(low)
    assert gan_loss_discriminator(high, low) < gan_loss_discriminator(low, high)
    # Stable for extreme logits (the reason for the logits form).
    assert torch.isfinite(gan_loss_discriminator(torch.full((1,), -1e4), torch.full((1,), 1e4)))


def test_gradients_reach_every_generator_parameter(vgg_file):
    torch.manual_seed(0)
    g, d = Generator(GeneratorConfig(n_res_blocks=2, channels=8)), Discriminator()
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


def test_vgg19_layer_names_match_torchvision_layers():
    from torch import nn
    from torchvision.models.vgg import cfgs, make_layers

    from dsgan_cli.method.losses import VGG19_LAYERS

    features = make_layers(cfgs["E"], batch_norm=False)
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    assert len(VGG19_LAYERS) == len(features)
    for name, index in VGG19_LAYERS.items():
        assert isinstance(features[index], kinds[name[:4]]), (name, index, features[index])
    # conv{b}_{c}: the c-th convolution of block b (blocks end at the pools)
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    assert [VGG19_LAYERS[f"pool{b}"] for b in range(1, 6)] == pools
    assert VGG19_LAYERS["conv3_4"] == pools[1] + 7 and VGG19_LAYERS["relu5_1"] == pools[3] + 2


def test_vgg_input_is_normalised_with_imagenet_statistics():
    from torchvision.models import VGG19_Weights

    feats = VGGFeatures(LAYERS, weights="random")
    ref = VGG19_Weights.IMAGENET1K_V1.transforms()
    assert torch.allclose(feats.mean.flatten(), torch.tensor(ref.mean))
    assert torch.allclose(feats.std.flatten(), torch.tensor(ref.std))


def test_features_only_file_loads_and_conv_taps_are_pre_activation(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(4)
    block = make_layers(cfgs["E"], batch_norm=False)
    path = tmp_path / "features.safetensors"
    state = {k: v.contiguous() for k, v in block.state_dict().items()}  # keys "0.weight", ...
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a classifier head next to it is ignored
    save_file(state, str(path))
    feats = VGGFeatures(("conv1_1", "relu1_1"), weights=str(path))
    assert torch.equal(feats.features[0].weight, block[0].weight)
    conv, relu = feats(torch.rand(1, 3, 16, 16))
    assert conv.min() < 0, "a conv layer's features are already rectified: an in-place ReLU overwrote them"
    assert torch.equal(relu, conv.clamp_min(0))


def test_perceptual_distance_is_the_layer_mean_of_normalised_squared_differences(vgg_file):
    torch.manual_seed(6)
    loss = PerceptualLoss(LAYERS, weights=str(vgg_file))
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    fx, fy = loss.vgg(x), loss.vgg(y)
    per_layer = []
    for a, b in zip(fx, fy):
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        per_layer.append(((a - b) ** 2).sum(dim=1).mean())
    assert torch.allclose(loss(x, y), torch.stack(per_layer).mean(), rtol=1e-4)


def test_generator_objective_is_the_weighted_sum_of_its_parts(vgg_file):
    torch.manual_seed(7)
    crit = GeneratorLoss(LossWeights(w_color=0.7, w_gan=0.02, w_perceptual=0.3), perceptual=PerceptualLoss(LAYERS, weights=str(vgg_file)))
    xd, xb, logits = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), torch.randn(1, 1, 16, 16)
    total, parts = crit(xd, xb, logits)
    assert torch.allclose(total, 0.7 * parts["color"] + 0.02 * parts["gan"] + 0.3 * parts["perceptual"])
    assert torch.allclose(parts["gan"], torch.nn.functional.softplus(-logits).mean()), "G's GAN term is not -log D(Xd)"
    real, fake = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    want = torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
    assert torch.allclose(gan_loss_discriminator(real, fake), want), "D's loss is not -log D(real) - log(1 - D(fake))"
    assert "perceptual" not in GeneratorLoss(LossWeights(w_perceptual=0.0), perceptual=crit.perceptual)(xd, xb, logits)[1]


def test_vgg_features_are_torchvision_layers_on_imagenet_normalised_input(vgg_file):
    from torchvision.models import VGG19_Weights

    feats = VGGFeatures(("relu1_2", "relu2_2"), weights=str(vgg_file))
    torch.manual_seed(9)
    x = torch.rand(2, 3, 16, 16)
    t = VGG19_Weights.IMAGENET1K_V1.transforms()
    h = (x - torch.tensor(t.mean).view(1, 3, 1, 1)) / torch.tensor(t.std).view(1, 3, 1, 1)
    net = vgg19(weights=None).features
    net.load_state_dict({k.removeprefix("features."): v for k, v in load_file(str(vgg_file)).items() if k.startswith("features.")})
    with torch.no_grad():
        want = [net[:4](h), net[:9](h)]  # relu1_2 is layer 3, relu2_2 is layer 8
        got = feats(x)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5), "VGG features are not taken on ImageNet-normalised input"


def test_wrong_architecture_file_and_deep_layer_lists(tmp_path):
    bad = tmp_path / "other.safetensors"
    save_file({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, str(bad))
    with pytest.raises(DsganError, match=r"other.safetensors: not VGG19 weights \(Error\(s\) in loading state_dict"):
        VGGFeatures(LAYERS, weights=str(bad))
    feats = VGGFeatures(("relu1_1", "relu2_1", "relu3_1"), weights="random")
    assert len(feats(torch.rand(1, 3, 16, 16))) == 3, "every requested layer must be tapped"


def test_generator_loss_defaults_are_the_reference_ones():
    crit = GeneratorLoss()
    assert (crit.w_color, crit.w_gan, crit.w_perceptual) == (1.0, 0.005, 0.01)
    assert not crit.color.low.gaussian and crit.color.low.kernel_size == 5, "the colour loss low-pass is a 5x5 box by default"


def _valid_blur(x: torch.Tensor, k: int, gaussian: bool) -> torch.Tensor:
    """Box or Gaussian (sigma k/6) blur without padding ('valid' borders), computed here in float64."""
    import numpy as np

    c = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k]
    w = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (k / 6) ** 2)) if gaussian else np.ones((k, k))
    w /= w.sum()
    a = x.double().numpy()
    h, wd = a.shape[2] - k + 1, a.shape[3] - k + 1
    out = sum(w[i, j] * a[:, :, i : i + h, j : j + wd] for i in range(k) for j in range(k))
    return torch.from_numpy(out)


@pytest.mark.parametrize("k,gaussian", [(5, False), (3, True), (7, True)])
def test_color_loss_is_l1_between_valid_low_passes(k, gaussian):
    torch.manual_seed(11)
    x, y = torch.rand(2, 3, 14, 13), torch.rand(2, 3, 14, 13)
    want = (_valid_blur(x, k, gaussian) - _valid_blur(y, k, gaussian)).abs().mean().item()
    got = ColorLoss(k, gaussian=gaussian)(x, y).item()
    assert abs(got - want) < 1e-6, f"colour loss {got:.6f}, L1 of the {'Gaussian' if gaussian else 'box'} {k}x{k} low-passes {want:.6f}"
    crit = GeneratorLoss(LossWeights(w_color=1.0, w_gan=0.0, w_perceptual=0.0), kernel_size=k, gaussian=gaussian)
    total, parts = crit(x, y, torch.zeros(2, 1, 14, 13))
    assert abs(parts["color"].item() - want) < 1e-6, "GeneratorLoss does not pass its filter settings to the colour loss"
    assert abs(total.item() - want) < 1e-6, "with w_gan = 0 the total is not the colour term"


def test_generator_gan_term_is_minus_log_d_and_half_precision_is_computed_in_float32():
    logits = torch.tensor([[-3.0, 0.0], [2.0, 9.0]]).view(1, 1, 2, 2)
    want = float(torch.log1p(torch.exp(-logits.double())).mean())
    assert abs(gan_loss_generator(logits).item() - want) < 1e-6, "G's GAN term is not mean(-log sigmoid(logit))"
    half = gan_loss_generator(logits.half())
    assert half.dtype == torch.float32, "the GAN loss must be computed in float32 under mixed precision"
    crit = GeneratorLoss(LossWeights(w_color=0.0, w_gan=2.5, w_perceptual=0.0))
    x = torch.rand(1, 3, 8, 8)
    total, parts = crit(x, x, logits)
    assert set(parts) == {"color", "gan"} and abs(total.item() - 2.5 * want) < 1e-5, "total is not w_gan * GAN term"


class _RecordingPerceptual(torch.nn.Module):
    """A perceptual term that records what it was given (to check the precomputed features are used)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, y=None, y_feats=None):
        self.calls.append(y_feats)
        return (x - y).abs().mean() * 0 + 1.0


def test_generator_loss_hands_precomputed_features_to_the_perceptual_term():
    rec = _RecordingPerceptual()
    crit = GeneratorLoss(LossWeights(w_color=0.0, w_gan=0.0, w_perceptual=0.5), perceptual=rec)
    feats = [torch.ones(1, 2, 3, 3)]
    x = torch.rand(1, 3, 8, 8)
    total, parts = crit(x, x, torch.zeros(1, 1, 8, 8), feats)
    assert len(rec.calls) == 1 and rec.calls[0] is feats, "the precomputed VGG(Xb) features were not passed on"
    assert abs(total.item() - 0.5) < 1e-6 and parts["perceptual"].item() == 1.0


def test_added_detail_loss_charges_sharpening_and_ringing_not_blur_or_output_noise():
    from dsgan_cli.method.losses import AddedDetailLoss, GeneratorLoss
    from dsgan_cli.method.models import FilterHigh, FilterLow

    torch.manual_seed(0)
    xb = FilterLow(3)(torch.rand(2, 3, 24, 24))  # smooth content with edges
    loss = AddedDetailLoss(5)
    sharpened = xb + 1.0 * FilterHigh(5)(xb)
    blurred = FilterLow(3)(xb)
    assert loss(xb, xb) == 0
    assert loss(blurred, xb) < 1e-3 * loss(sharpened, xb), "removing detail (blur) must cost nothing"
    assert loss(sharpened, xb) > 1e-3
    ringing = xb.clone()
    ringing[..., 10:14, :] += 0.05 * torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None]  # stripes in a flat band
    assert loss(ringing, xb) > 0
    # In the generator objective the term sees the deterministic part only: output noise on top costs nothing more.
    crit = GeneratorLoss(LossWeights(w_color=0.0, w_gan=0.0, w_perceptual=0.0, w_added_detail=2.0))
    logits = torch.zeros(2, 1, 24, 24)
    noisy = xb + 0.05 * torch.randn_like(xb)
    total, parts = crit(noisy, xb, logits, xd_deterministic=xb)
    assert parts["added_detail"] == 0 and total == 0
    total, parts = crit(noisy, xb, logits, xd_deterministic=sharpened)
    assert torch.isclose(total, 2.0 * loss(sharpened, xb))


def test_generator_returns_its_deterministic_part_from_the_same_pass():
    from dsgan_cli.method.models import Generator

    torch.manual_seed(1)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, output="residual", output_noise=True)).eval()
    with torch.no_grad():
        g.block_output.weight.normal_(0, 0.1)
        x = torch.rand(1, 3, 10, 10)
        z = g.make_noise(x, torch.Generator().manual_seed(2))
        xd, det, ref = g(x, z, with_deterministic=True)
        assert torch.equal(xd, g(x, z))
        assert torch.allclose(det, g(x, torch.zeros_like(z)), atol=1e-6)
        assert not torch.allclose(det, xd)
        assert ref is x, "without a learned blur the content reference is the input itself"


def test_noise_level_reads_grain_not_edges_or_smooth_texture():
    """The level follows the grain's standard deviation whatever the content: flat, edges, or smooth texture."""
    import numpy as np
    from scipy import ndimage

    from dsgan_cli.method.losses import NoiseLevelLoss

    gen = torch.Generator().manual_seed(0)
    flat = torch.rand(4, 3, 1, 1, generator=gen).expand(4, 3, 48, 48).clone()
    edges = flat.clone()
    edges[:, :, :, 24:] += 0.4
    edges[:, :, 30:, :] -= 0.3
    texture = torch.from_numpy(ndimage.gaussian_filter(np.random.default_rng(0).random((4, 3, 48, 48)), (0, 0, 2, 2))).float()
    loss = NoiseLevelLoss()
    for image in (flat, edges, texture):
        assert loss.level(image).item() * 255 < 1.0, "clean content read as grain"
        for s in (2, 5, 8):
            got = loss.level(image + torch.randn(image.shape, generator=gen) * s / 255).item() * 255
            assert 0.9 * s < got < 1.1 * s, f"grain {s}: level {got:.2f}"
    noisy = flat + torch.randn(flat.shape, generator=gen) * 5 / 255
    assert loss(noisy, noisy.clone()) < 1e-6
    # The loss pulls weak grain up to the real grain's level: its gradient on the grain's scale is negative.
    scale = torch.tensor(2.0, requires_grad=True)
    z = torch.randn(flat.shape, generator=gen)
    loss(edges + scale * z / 255, noisy).backward()
    assert scale.grad < 0


def test_content_without_noise_compares_colour_and_perceptual_on_the_deterministic_part():
    from dsgan_cli.method.losses import GeneratorLoss, PerceptualLoss

    torch.manual_seed(0)
    xb = torch.rand(2, 3, 16, 16)
    det = xb + 0.02
    xd = det + 0.1 * torch.randn_like(det)
    perceptual = PerceptualLoss(layers=("relu1_2",), weights="random")
    logits = torch.zeros(2, 1, 16, 16)
    on = GeneratorLoss(LossWeights(w_color=1.0, w_gan=0.0, w_perceptual=1.0, content_without_noise=True), perceptual=perceptual)
    off = GeneratorLoss(LossWeights(w_color=1.0, w_gan=0.0, w_perceptual=1.0), perceptual=perceptual)
    _, p_on = on(xd, xb, logits, xd_deterministic=det)
    _, p_off = off(xd, xb, logits, xd_deterministic=det)
    _, p_det = off(det, xb, logits)
    assert torch.isclose(p_on["color"], p_det["color"]) and torch.isclose(p_on["perceptual"], p_det["perceptual"])
    assert p_off["perceptual"] > 2 * p_on["perceptual"], "with the option off the noise is charged by the perceptual term"
