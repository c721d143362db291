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
