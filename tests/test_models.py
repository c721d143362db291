import numpy as np
import pytest
import torch

from dsgan_cli.models import Discriminator, FilterHigh, FilterLow, Generator, count_parameters


def test_parameter_counts_match_reference():
    assert count_parameters(Generator()) == 594_380
    assert count_parameters(Discriminator()) == 1_030_273


def test_generator_keeps_resolution_and_range():
    g = Generator(n_res_blocks=2, channels=8)
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
    from dsgan_cli.models import downscale

    x = torch.full((2, 3, 32, 24), 0.25)
    y = downscale(x, 2)
    assert y.shape == (2, 3, 16, 12)
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-6)
    assert downscale(x, 1) is x


@pytest.mark.parametrize("k", [3, 5, 7])
def test_gaussian_low_pass_uses_sigma_kernel_over_6(k):
    import numpy as np

    from dsgan_cli.models import gaussian_kernel

    c = (k - 1) / 2
    yy, xx = np.mgrid[0:k, 0:k]
    want = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * (k / 6) ** 2))
    want /= want.sum()
    assert np.allclose(gaussian_kernel(k).numpy(), want, atol=1e-7)
    # the filter applies that kernel: an impulse far from the borders comes out as the kernel
    x = torch.zeros(1, 3, 15, 15)
    x[:, :, 7, 7] = 1
    out = FilterLow(k, gaussian=True)(x)[0, 0, 7 - int(c):8 + int(c), 7 - int(c):8 + int(c)]
    assert np.allclose(out.numpy(), want, atol=1e-6)


def test_architectures_follow_the_reference():
    """G: conv3x3+PReLU, residual blocks (conv-PReLU-conv), conv3x3, sigmoid; D: high-pass, then
    conv5x5 64 / conv5x5 128 + BN / conv5x5 256 + BN with LeakyReLU(0.2), then a 1x1 conv to one logit."""
    from torch import nn

    g = Generator(n_res_blocks=3, channels=12)
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
        (3, 64, 5, 2, 1), (64, 128, 5, 2, 1), (128, 256, 5, 2, 1), (256, 1, 1, 0, 1)]
    assert [m.negative_slope for m in layers if isinstance(m, nn.LeakyReLU)] == [0.2, 0.2, 0.2]
    assert [m.num_features for m in layers if isinstance(m, nn.BatchNorm2d)] == [128, 256]
    assert isinstance(layers[-1], nn.Conv2d), "D must end in raw logits (the loss applies the sigmoid)"


def test_generator_receptive_radius_is_one_pixel_per_conv():
    g = Generator(n_res_blocks=2, channels=4).double()
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
    from dsgan_cli.models import downscale

    x = (torch.arange(16)[None, :] >= 8).float().expand(1, 3, 16, 16).contiguous()
    y = downscale(x, 2)  # bicubic rings at a 0 -> 1 step: -0.012 and 1.012 before clamping
    assert y.min() >= 0 and y.max() <= 1, "Xb leaves [0, 1]: real images never do"
    assert y.max() == 1 and y.min() == 0
    assert downscale(torch.rand(1, 3, 3, 5), 4).shape == (1, 3, 1, 1), "tiny images must keep at least one pixel"


def test_filter_repr_names_its_settings():
    assert FilterLow(5).extra_repr() == "kernel_size=5, padding='same', box"
    assert FilterLow(3, padding="valid", gaussian=True).extra_repr() == "kernel_size=3, padding='valid', gaussian"
