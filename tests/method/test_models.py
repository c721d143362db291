import numpy as np
import pytest
import torch

from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.method.models import Discriminator, DiscriminatorConfig, FilterHigh, FilterLow, Generator, GeneratorConfig, count_parameters


def test_parameter_counts_match_reference():
    assert count_parameters(Generator()) == 594_380
    assert count_parameters(Discriminator()) == 1_030_273


def test_generator_keeps_resolution_and_range():
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=8))
    x = torch.rand(2, 3, 20, 28)
    y = g(x)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1


def test_discriminator_returns_per_pixel_logits():
    d = Discriminator()
    x = torch.rand(2, 3, 24, 24)
    assert d(x).shape == (2, 1, 24, 24)


@pytest.mark.parametrize("gaussian", [False, True])
def test_highpass_of_constant_image_is_zero(gaussian):
    x = torch.full((1, 3, 32, 32), 0.7)
    hp = FilterHigh(5, gaussian=gaussian)(x)
    # Both filters keep constants exactly, borders included (no zero padding).
    assert hp[..., 2:-2, 2:-2].abs().max() < 1e-6
    assert hp.abs().max() < 1e-6


def test_highpass_responds_to_edges_and_lowpass_sizes():
    x = torch.zeros(1, 3, 16, 16)
    x[..., :, 8:] = 1.0
    hp = FilterHigh()(x)
    assert hp[..., 8, 7].abs().max() > 0.1
    assert FilterLow(5, padding="same")(x).shape == x.shape
    assert FilterLow(5, padding="valid")(x).shape == (1, 3, 12, 12)
    # Low-pass + high-pass reconstruct the image.
    assert torch.allclose(FilterLow()(x) + hp, x, atol=1e-6)


def test_filter_rejects_even_kernel():
    with pytest.raises(ValueError):
        FilterLow(4)


def test_downscale_halves_and_preserves_flat_colour():
    from dsgan_cli.method.models import downscale

    x = torch.full((2, 3, 32, 24), 0.25)
    y = downscale(x, 2)
    assert y.shape == (2, 3, 16, 12)
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-6)
    assert downscale(x, 1) is x


@pytest.mark.parametrize("k", [3, 5, 7])
def test_gaussian_low_pass_uses_sigma_kernel_over_6(k):
    import numpy as np

    from dsgan_cli.method.models import gaussian_kernel

    c = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k]
    want = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (k / 6) ** 2))
    want /= want.sum()
    assert np.allclose(gaussian_kernel(k).numpy(), want, atol=1e-7)
    # the filter applies that kernel: an impulse far from the borders comes out as the kernel
    x = torch.zeros(1, 3, 15, 15)
    x[:, :, 7, 7] = 1
    out = FilterLow(k, gaussian=True)(x)[0, 0, 7 - int(c) : 8 + int(c), 7 - int(c) : 8 + int(c)]
    assert np.allclose(out.numpy(), want, atol=1e-6)


def test_architectures_follow_the_reference():
    """G: conv3x3+PReLU, residual blocks (conv-PReLU-conv), conv3x3, sigmoid; D: high-pass, then
    conv5x5 64 / conv5x5 128 + BN / conv5x5 256 + BN with LeakyReLU(0.2), then a 1x1 conv to one logit."""
    from torch import nn

    g = Generator(GeneratorConfig(n_res_blocks=3, channels=12))
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 + 1
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.PReLU) for m in g.modules()) == 1 + 3
    x = torch.rand(1, 3, 9, 9)
    assert torch.allclose(g(x), torch.sigmoid(g.block_output(g.res_blocks(g.block_input(x)))))
    block = g.res_blocks[0]
    h = torch.randn(1, 12, 5, 5)
    assert torch.allclose(block(h), h + block.conv2(block.prelu(block.conv1(h))), atol=1e-6), "residual skip missing"

    d = Discriminator()
    layers = list(d.net.net)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0], c.stride[0]) for c in convs] == [
        (3, 64, 5, 2, 1),
        (64, 128, 5, 2, 1),
        (128, 256, 5, 2, 1),
        (256, 1, 1, 0, 1),
    ]
    assert [m.negative_slope for m in layers if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2, 0.2]
    assert [m.num_features for m in layers if isinstance(m, nn.BatchNorm2d)] == [128, 256]
    assert isinstance(layers[-1], nn.Conv2d), "D must end in raw logits (the loss applies the sigmoid)"
    from dsgan_cli.method.models import DiscriminatorBasic

    assert DiscriminatorBasic().net[0].in_channels == 3, "the plain discriminator must take RGB images by default"


def test_generator_receptive_radius_is_one_pixel_per_conv():
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=4)).double()
    r = g.receptive_radius
    x = torch.rand(1, 3, 31, 31, dtype=torch.float64)
    y = x.clone()
    y[..., 15, 15] += 1.0  # one input pixel changes...
    changed = (g(x) - g(y)).abs().amax(dim=1)[0] > 0
    rows, cols = changed.nonzero(as_tuple=True)
    # ...and exactly the outputs within the radius change.
    assert rows.min() == 15 - r and rows.max() == 15 + r and cols.min() == 15 - r and cols.max() == 15 + r


def test_kernel_size_one_is_a_valid_identity_low_pass():
    x = torch.rand(1, 3, 6, 6)
    assert torch.equal(FilterLow(1)(x), x)
    assert FilterHigh(1)(x).abs().max() == 0


def test_downscale_stays_in_range_on_saturated_content():
    from dsgan_cli.method.models import downscale

    x = (torch.arange(16)[None, :] >= 8).float().expand(1, 3, 16, 16).contiguous()
    y = downscale(x, 2)  # bicubic rings at a 0 -> 1 step: -0.012 and 1.012 before clamping
    assert y.min() >= 0 and y.max() <= 1, "Xb leaves [0, 1]: real images never do"
    assert y.max() == 1 and y.min() == 0
    assert downscale(torch.rand(1, 3, 3, 5), 4).shape == (1, 3, 1, 1), "tiny images must keep at least one pixel"


def test_filter_repr_names_its_settings():
    assert FilterLow(5).extra_repr() == "kernel_size=5, padding='same', box"
    assert FilterLow(3, padding="valid", gaussian=True).extra_repr() == "kernel_size=3, padding='valid', gaussian"


# ----------------------------------------------------------------------------- generator options (kill tests for mutants)


def test_residual_generator_starts_as_identity_and_adds_its_last_convolution():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=8, output="residual"))
    x = torch.rand(2, 3, 9, 11)
    assert torch.equal(g(x), x), "a residual generator must start as the identity (last convolution initialised to zero)"
    bias = torch.tensor([0.7, -0.4, 0.05])
    with torch.no_grad():
        g.block_output.bias.copy_(bias)
    want = x + bias.view(1, 3, 1, 1)
    assert torch.allclose(g(x), want, atol=1e-6), "residual output is not Xb + r (r = the last convolution's output)"
    assert g(x).max() > 1 and g(x).min() < 0, "the residual output must not be clamped (a clamp has no gradient outside [0, 1])"


def test_sigmoid_generator_squashes_its_last_convolution():
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=4))
    with torch.no_grad():
        g.block_output.weight.zero_()
        g.block_output.bias.copy_(torch.tensor([-2.0, 0.0, 3.0]))
    y = g(torch.rand(1, 3, 5, 6))
    want = torch.tensor([1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-3.0))], dtype=torch.float32).view(1, 3, 1, 1)
    assert torch.allclose(y, want.expand_as(y), atol=1e-6), "the default output is not the sigmoid of the last convolution"


def test_noise_input_is_seeded_standard_normal_and_changes_the_output():
    torch.manual_seed(1)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, output_noise=True))
    assert Generator(GeneratorConfig(n_res_blocks=1, channels=8)).make_noise(torch.rand(1, 3, 4, 4)) is None, "a G without noise got noise"
    x = torch.rand(3, 3, 16, 12, dtype=torch.float64)
    z = g.make_noise(x, torch.Generator().manual_seed(7))
    assert z.shape == (3, 3, 16, 12) and z.dtype == torch.float64, f"noise has shape {tuple(z.shape)} / {z.dtype}"
    want = torch.randn((3, 3, 16, 12), generator=torch.Generator().manual_seed(7), dtype=torch.float32).double()
    assert torch.equal(z, want), "seeded noise is not N(0, 1) drawn from the given generator"
    g = g.double()
    assert torch.equal(g(x, z), g(x, z)), "G with a given noise map is not deterministic"
    assert not torch.allclose(g(x, z), g(x, -z)), "G ignores its noise input"
    assert not torch.allclose(g(x), g(x)), "G without a given noise map must draw fresh noise on every call"


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate"])
def test_generator_padding_and_arch_round_trip(padding):
    g = Generator(
        GeneratorConfig(
            n_res_blocks=2, channels=6, padding=padding, output_noise=True, output="residual", blur_kernel=5, noise_mix=True, noise_kernel=3
        )
    )
    assert {m.padding_mode for m in g.modules() if isinstance(m, torch.nn.Conv2d)} == {padding}
    assert g.arch() == {
        "n_res_blocks": 2,
        "channels": 6,
        "padding": padding,
        "output": "residual",
        "output_noise": True,
        "jpeg_quality": 0,
        "noise_init": 1.7,
        "blur_kernel": 5,
        "noise_mix": True,
        "noise_kernel": 3,
    }
    h = Generator(GeneratorConfig(**g.arch()))
    assert {k: v.shape for k, v in h.state_dict().items()} == {k: v.shape for k, v in g.state_dict().items()}
    with pytest.raises(ValueError, match="padding must be one of"):
        Generator(GeneratorConfig(padding="circularish"))
    with pytest.raises(ValueError, match="output must be one of"):
        Generator(GeneratorConfig(output="tanh"))


def test_padding_mode_changes_only_the_border():
    """reflect vs zeros: the same weights give the same interior and a different border."""
    torch.manual_seed(2)
    a = Generator(GeneratorConfig(n_res_blocks=1, channels=4, padding="zeros"))
    b = Generator(GeneratorConfig(n_res_blocks=1, channels=4, padding="reflect"))
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 12, 12)
    r = a.receptive_radius
    ya, yb = a(x), b(x)
    assert torch.allclose(ya[..., r:-r, r:-r], yb[..., r:-r, r:-r], atol=1e-6), "padding changed the interior"
    assert not torch.allclose(ya[..., 0, :], yb[..., 0, :]), "reflect padding gives the same border as zero padding"


# ----------------------------------------------------------------------------- filters (kill tests for mutants)


def _gaussian_reference(x: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    """Gaussian blur with reflect padding, computed here in numpy (float64)."""
    c = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k]
    w = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma**2))
    w /= w.sum()
    p = int(c)
    a = np.pad(x.double().numpy(), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    out = np.zeros(x.shape)
    for i in range(k):
        for j in range(k):
            out += w[i, j] * a[:, :, i : i + x.shape[2], j : j + x.shape[3]]
    return torch.from_numpy(out)


@pytest.mark.parametrize("sigma", [None, 2.0])
def test_gaussian_high_pass_subtracts_a_reflect_padded_gaussian_blur(sigma):
    torch.manual_seed(3)
    x = torch.rand(2, 3, 10, 9, dtype=torch.float64)
    got = FilterHigh(5, gaussian=True, sigma=sigma).double()(x)
    want = x - _gaussian_reference(x, 5, 5 / 6 if sigma is None else sigma)
    assert torch.allclose(got, want, atol=1e-9), (
        f"FilterHigh(gaussian=True, sigma={sigma}) is not x minus the Gaussian blur (max error {(got - want).abs().max():.3g})"
    )
    box = FilterHigh(5)(x.float()).double()
    assert not torch.allclose(box, want, atol=1e-3), "the box and Gaussian high-passes agree: the test cannot tell them apart"


def test_filter_kernel_is_not_a_weight_and_filters_keep_the_input_dtype():
    assert Discriminator(DiscriminatorConfig(gaussian=True)).state_dict().keys() == Discriminator().state_dict().keys(), (
        "the fixed Gaussian kernel is saved as a weight: checkpoints would differ between filter choices"
    )
    assert Discriminator().filter.low.gaussian is False and Discriminator(DiscriminatorConfig(gaussian=True)).filter.low.gaussian is True
    # D's high-pass uses the kernel size it is given: x - 7x7 box mean (inside the image)
    xi = torch.rand(1, 3, 12, 12)
    want = xi - torch.nn.functional.avg_pool2d(xi, 7, stride=1, padding=3, count_include_pad=False)
    assert torch.allclose(Discriminator(DiscriminatorConfig(filter_kernel=7)).filter(xi), want, atol=1e-6), (
        "Discriminator(DiscriminatorConfig(filter_kernel=7)) does not filter with a 7x7 kernel"
    )
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    for f in (FilterLow(3), FilterLow(3, gaussian=True), FilterLow(5, padding="valid", gaussian=True)):
        assert f(x).dtype == torch.float64, f"{f} changed the dtype"


def test_residual_block_defaults_keep_size_and_add_the_skip():
    from dsgan_cli.method.models import ResidualBlock

    torch.manual_seed(4)
    block = ResidualBlock()
    assert block.conv1.in_channels == block.conv2.out_channels == 64 and block.conv1.kernel_size == (3, 3)
    h = torch.zeros(1, 64, 7, 5)
    with torch.no_grad():
        block.conv2.bias.fill_(0.25)
        block.conv2.weight.zero_()
    assert torch.equal(block(h), torch.full_like(h, 0.25)), "the residual block is not x + conv2(prelu(conv1(x)))"
    assert block(torch.rand(1, 64, 7, 5)).shape == (1, 64, 7, 5)


def test_output_noise_is_per_pixel_and_colour_channel_and_scaled_by_the_image():
    """With output_noise, the three noise channels reach Xd only at their own pixel and colour channel."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, output="residual", output_noise=True)).eval()
    assert g.noise_dim == 3
    with torch.no_grad():
        g.noise_scale.weight.normal_(0, 0.3)  # image-dependent scale, as after training
        x = torch.rand(1, 3, 12, 12)
        z = g.make_noise(x, torch.Generator().manual_seed(1))
        base = g(x, z)
        z2 = z.clone()
        z2[0, 2, 5, 7] += 1.0  # output noise of the blue channel at one pixel
        diff = (g(x, z2) - base).abs()
    assert diff[0, 2, 5, 7] > 0
    diff[0, 2, 5, 7] = 0
    assert diff.max() == 0, "an output-noise value changed other pixels or channels"


def test_output_noise_survives_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, output_noise=True)).eval()
    save_generator(g, tmp_path / "g.safetensors", step=1, scale=2)
    h, _ = load_generator(tmp_path / "g.safetensors")
    assert h.output_noise and h.noise_dim == 3
    x = torch.rand(1, 3, 8, 8)
    z = g.make_noise(x, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(g(x, z), h(x, z))


def test_batch_norm_hides_the_strength_of_the_high_pass_from_d_and_no_norm_shows_it():
    """Why model.d_norm exists: without the convolutions' biases a batch-norm D gives the same logits for a
    batch of grain and for the same grain 3x stronger; the D without normalisation does not."""
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.05
    change = {}
    for norm in ("batch", "none"):
        torch.manual_seed(0)
        d = Discriminator(DiscriminatorConfig(norm=norm)).train()
        for m in d.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.zeros_(m.bias)
        with torch.no_grad():
            a, b = d(x), d(3 * x)
        change[norm] = ((a - b).abs().mean() / a.abs().mean()).item()
    assert change["batch"] < 0.02, f"batch norm D changed by {change['batch']:.3f} for 3x the grain"
    assert change["none"] > 0.5, f"the D without normalisation changed only {change['none']:.3f} for 3x the grain"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in Discriminator(DiscriminatorConfig(norm="none")).modules())
    with pytest.raises(ValueError, match="norm must be one of"):
        Discriminator(DiscriminatorConfig(norm="group"))


def test_output_noise_starts_at_noise_init_levels_whatever_the_image():
    for level in (1.7, 6.0):
        g = Generator(GeneratorConfig(n_res_blocks=1, channels=8, output="residual", output_noise=True, noise_init=level)).eval()
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            xd, det, _ = g(x, with_deterministic=True)
        std = (xd - det).std().item() * 255
        assert abs(std - level) < 0.05 * level, f"noise_init {level}: output noise std {std:.2f} levels"
    with pytest.raises(ValueError, match="noise_init"):
        Generator(GeneratorConfig(output_noise=True, noise_init=0))
