"""G's learned blur (``model.blur_kernel``): what it can express, and that only the GAN sets it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dsgan_cli.data.family import anisotropic_gaussian
from dsgan_cli.engines.generate import generate_tiled
from dsgan_cli.method.losses import GeneratorLoss, LossWeights
from dsgan_cli.method.models import BlurKernel, Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError


def _principal_axis(k: np.ndarray) -> tuple[float, float, float]:
    """(sd major, sd minor, angle in degrees counter-clockwise from x, y up) of a kernel's second moments."""
    r = k.shape[0] // 2
    ys, xs = np.mgrid[-r : r + 1, -r : r + 1]
    ys = -ys  # rows run downwards
    w = k / k.sum()
    mx, my = (w * xs).sum(), (w * ys).sum()
    cxx = (w * (xs - mx) ** 2).sum()
    cyy = (w * (ys - my) ** 2).sum()
    cxy = (w * (xs - mx) * (ys - my)).sum()
    vals, vecs = np.linalg.eigh(np.array([[cxx, cxy], [cxy, cyy]]))
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1])) % 180
    return math.sqrt(vals[1]), math.sqrt(max(vals[0], 0.0)), angle


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def test_kernel_is_a_normalised_non_negative_point_symmetric_blur_whatever_its_logits():
    torch.manual_seed(0)
    blur = BlurKernel(7)
    with torch.no_grad():
        blur.logits.normal_(0, 3)
    k = blur.kernel().detach()
    assert k.min() >= 0 and torch.isclose(k.sum(), torch.tensor(1.0))
    assert torch.allclose(k, k.flip(0, 1)), "the kernel must equal its 180-degree rotation"
    ys, xs = torch.meshgrid(torch.arange(7) - 3.0, torch.arange(7) - 3.0, indexing="ij")
    assert abs(float((k * xs).sum())) < 1e-6 and abs(float((k * ys).sum())) < 1e-6, "the blur shifts the image"
    flat = torch.full((1, 3, 12, 12), 0.3)
    assert torch.allclose(blur(flat), flat), "a flat image must stay flat, borders included"
    # No sharpening: the blur never raises an image's total variation.
    x = torch.rand(1, 3, 20, 20)
    tv = lambda y: (y[..., 1:, :] - y[..., :-1, :]).abs().sum() + (y[..., 1:] - y[..., :-1]).abs().sum()  # noqa: E731
    assert tv(blur(x)) <= tv(x)


def test_kernel_starts_close_to_the_identity():
    blur = BlurKernel(9)
    assert 0.8 < float(blur.kernel().detach()[4, 4]) < 0.9
    major, minor, _ = _principal_axis(blur.kernel().detach().double().numpy())
    assert major < 0.45 and abs(major - minor) < 1e-6, f"starts as a {major:.2f} x {minor:.2f} px blur"


@pytest.mark.parametrize(("sigma_x", "sigma_y", "angle"), [(1.2, 0.5, 30.0), (1.2, 0.5, 120.0), (0.9, 0.9, 0.0)])
def test_kernel_can_take_any_shape_and_orientation(sigma_x, sigma_y, angle):
    """Fitted to images through a known anisotropic blur, the kernel takes the blur's orientation and widths."""
    truth = anisotropic_gaussian(sigma_x, sigma_y, angle)
    size = truth.shape[0]
    t = torch.from_numpy(truth.copy()).float()[None, None].expand(3, 1, size, size)
    torch.manual_seed(1)
    x = F.avg_pool2d(torch.rand(8, 3, 40, 40), 2, stride=1)  # some correlation, like image content
    target = F.conv2d(F.pad(x, (size // 2,) * 4, mode="reflect"), t, groups=3)
    blur = BlurKernel(size)
    opt = torch.optim.Adam(blur.parameters(), lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        F.mse_loss(blur(x), target).backward()
        opt.step()
    major, minor, got = _principal_axis(blur.kernel().detach().double().numpy())
    assert abs(major - sigma_x) < 0.1 and abs(minor - sigma_y) < 0.2, f"widths {major:.2f} / {minor:.2f}"
    if sigma_x != sigma_y:
        assert _angle_gap(got, angle) < 5, f"orientation {got:.1f} deg, want {angle}"


def _blur_generator() -> Generator:
    torch.manual_seed(3)
    return Generator(
        GeneratorConfig(
            n_res_blocks=1,
            channels=8,
            padding="reflect",
            output="residual",
            output_noise=True,
            blur_kernel=5,
            noise_kernel=7,
            noise_mix=True,
        )
    )


@pytest.mark.parametrize(("w_gan", "w_noise_level"), [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0)])
def test_content_terms_leave_the_blur_to_the_gan(w_gan, w_noise_level):
    """Colour, added-detail and noise-level terms judge what G adds to the blurred input: alone they move every
    weight of G but the blur; the GAN moves it."""
    from accelerate import Accelerator

    from dsgan_cli.engines.train import StepInputs, StepMode, discriminator_step, generator_step

    g = _blur_generator()
    d = Discriminator(DiscriminatorConfig(norm="none"))
    crit = GeneratorLoss(LossWeights(w_color=5.0, w_gan=w_gan, w_perceptual=0.0, w_added_detail=10.0, w_noise_level=w_noise_level))
    torch.manual_seed(4)
    batch = StepInputs([torch.rand(4, 3, 16, 16)], [torch.rand(4, 3, 16, 16)])
    acc = Accelerator(cpu=True)
    before = {n: p.detach().clone() for n, p in g.named_parameters()}
    xds, _ = discriminator_step(acc, g, d, torch.optim.SGD(d.parameters(), lr=0.1), batch, StepMode())
    generator_step(acc, g, d, torch.optim.SGD(g.parameters(), lr=0.1), crit, batch, xds, StepMode())
    moved = {n for n, p in g.named_parameters() if not torch.equal(p, before[n])}
    assert "block_output.weight" in moved
    assert ("blur.logits" in moved) == (w_gan > 0), f"moved {sorted(moved)}"


def test_receptive_radius_counts_the_blur_and_tiles_equal_the_whole_image():
    g = _blur_generator().eval()
    with torch.no_grad():
        g.blur.logits.normal_(0, 1)
        g.grain.logits.normal_(0, 1)
        g.block_output.weight.normal_(0, 0.1)
    r = g.receptive_radius
    assert r == 1 + 2 + 1 + 2
    x = torch.rand(1, 3, 31, 31, dtype=torch.float64)
    y = x.clone()
    y[..., 15, 15] += 1.0
    gd = g.double()
    z = torch.zeros(1, 3, 31, 31, dtype=torch.float64)
    changed = (gd(x, z) - gd(y, z)).abs().amax(dim=1)[0] > 0
    rows, cols = changed.nonzero(as_tuple=True)
    assert rows.min() == 15 - r and rows.max() == 15 + r and cols.min() == 15 - r and cols.max() == 15 + r
    g = g.float()
    x = torch.rand(1, 3, 37, 29)
    noise = g.make_noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = g(x, noise)
    for tile in (5, 7, 12):
        tiled = generate_tiled(g, x, tile, torch.device("cpu"), noise=noise)
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0), f"tile {tile}: {(tiled - whole).abs().max():.3g}"


def test_tiny_images_pass_through_a_wide_blur():
    blur = BlurKernel(9)
    assert blur(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3, 5)


def test_even_or_too_small_kernels_are_refused_by_config_and_recipe():
    for size in (1, 2, 8):
        with pytest.raises(ValueError, match="blur_kernel must be 0"):
            GeneratorConfig(blur_kernel=size)
    with pytest.raises(DsganError, match=r"model.blur_kernel must be 0 \(off\) or an odd number"):
        load_recipe("idphoto", ["model.blur_kernel=8"])
    assert load_recipe("idphoto", ["model.blur_kernel=7"]).model.blur_kernel == 7


# ----------------------------------------------------------------------------- the noise's colour mix


@pytest.mark.parametrize("grey", [0.0, 0.3, 0.8, 1.0])
def test_noise_colour_correlation_follows_the_grey_share_and_keeps_its_level(grey):
    """Measured on G's output: each channel's grain is (1 - w) z_c + w mean(z), scaled back to its level, so two
    channels correlate by (2ac + 3c^2) / (a^2 + 2ac + 3c^2) with a = 1 - w, c = w / 3; the level stays."""
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=4, output="residual", output_noise=True, noise_init=6.0, noise_mix=True)).eval()
    with torch.no_grad():
        g.noise_grey.fill_(math.log(grey / (1 - grey)) if 0 < grey < 1 else (40.0 if grey else -40.0))
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        xd, det, _ = g(x, g.make_noise(x, torch.Generator().manual_seed(0)), with_deterministic=True)
    grain = (xd - det)[0].flatten(1).double() * 255
    measured = torch.corrcoef(grain)
    a, c = 1 - grey, grey / 3
    want = (2 * a * c + 3 * c * c) / (a * a + 2 * a * c + 3 * c * c)
    off = measured[~torch.eye(3, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, want), atol=0.03), f"channel correlations {off.tolist()}, want {want:.3f}"
    assert torch.allclose(grain.std(dim=1), torch.full((3,), 6.0, dtype=torch.float64), rtol=0.03)


def test_grain_starts_independent_per_channel():
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=4, output="residual", output_noise=True, noise_mix=True))
    m = g.colour_mix().detach()
    assert float((m @ m.T)[0, 1]) < 0.02


def test_noise_mix_needs_output_noise():
    with pytest.raises(ValueError, match="noise_mix needs output_noise"):
        GeneratorConfig(noise_mix=True)
    with pytest.raises(DsganError, match="model.noise_mix needs model.output_noise"):
        load_recipe("idphoto", ["model.output_noise=false", "model.grain_check=false", "model.noise_mix=true"])


def test_learned_kernels_train_at_their_own_rate_on_the_same_schedule():
    from dsgan_cli.engines.train import build_networks, set_lr

    r = load_recipe(
        "idphoto",
        [
            "model.blur_kernel=5",
            "model.noise_kernel=3",
            "model.noise_mix=true",
            "optim.lr=0.001",
            "optim.structure_lr=0.05",
            "perceptual.weights=random",
        ],
    )
    fmts = {"G": torch.contiguous_format, "D": torch.contiguous_format, "P": torch.contiguous_format}
    G, _, _, opt_g, opt_d = build_networks(r, torch.device("cpu"), fmts)
    names = {id(p): n for n, p in G.named_parameters()}
    by_lr = {round(g["lr"], 6): sorted(names[id(p)] for p in g["params"]) for g in opt_g.param_groups}
    assert by_lr[0.05] == ["blur.logits", "grain.logits", "noise_grey"]
    assert len(by_lr[0.001]) == len(names) - 3
    set_lr([opt_g, opt_d], 0.0005)  # half-way down the decay
    assert sorted(g["lr"] for g in opt_g.param_groups) == pytest.approx([0.0005, 0.025])
    assert [g["lr"] for g in opt_d.param_groups] == pytest.approx([0.0005])


@pytest.mark.parametrize(("sigma_x", "sigma_y", "angle"), [(2.0, 0.6, 25.0), (1.5, 0.8, 160.0), (1.2, 0.7, 90.0)])
def test_kernel_axes_reads_an_anisotropic_gaussians_widths_and_orientation(sigma_x, sigma_y, angle):
    from dsgan_cli.method.models import kernel_axes

    major, minor, got = kernel_axes(torch.from_numpy(anisotropic_gaussian(sigma_x, sigma_y, angle)))
    assert abs(major - sigma_x) < 0.02 and abs(minor - sigma_y) < 0.02 and _angle_gap(got, angle) < 0.5, (major, minor, got)


def test_learned_structure_describes_the_blur_and_the_grain_mix():
    from dsgan_cli.method.models import learned_structure

    assert learned_structure(Generator(GeneratorConfig(n_res_blocks=1, channels=4))) == ""
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=4, output="residual", output_noise=True, noise_mix=True, blur_kernel=11))
    truth = torch.from_numpy(anisotropic_gaussian(1.5, 0.7, 120.0))  # 11 x 11
    with torch.no_grad():
        g.blur.logits.copy_(truth.clamp_min(1e-12).log().float())
        g.noise_grey.fill_(40.0)
    line = learned_structure(g)
    assert "blur sd 1.50 x 0.70 px at 120 deg" in line, line
    assert "grain colour correlation 1.00" in line, line


# ----------------------------------------------------------------------------- the noise's spatial correlation


@pytest.mark.parametrize(("sigma_x", "sigma_y", "angle"), [(0.6, 0.6, 0.0), (1.2, 0.5, 0.0), (1.2, 0.5, 90.0)])
def test_grain_spatial_correlation_follows_the_noise_kernel_and_keeps_its_level(sigma_x, sigma_y, angle):
    """Measured on G's output: the grain's correlation at one-pixel lags along x and y is the kernel's own
    autocorrelation there (white noise through a kernel k: sum k(p) k(p + lag) / sum k^2), and its level stays."""
    kernel = anisotropic_gaussian(sigma_x, sigma_y, angle)
    size = kernel.shape[0]
    g = Generator(
        GeneratorConfig(n_res_blocks=1, channels=4, output="residual", output_noise=True, noise_init=6.0, noise_kernel=size)
    ).eval()
    with torch.no_grad():
        g.grain.logits.copy_(torch.from_numpy(kernel).clamp_min(1e-30).log().float())
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        xd, det, _ = g(x, g.make_noise(x, torch.Generator().manual_seed(0)), with_deterministic=True)
    grain = ((xd - det) * 255).double()[..., 8:-8, 8:-8]
    energy = (kernel**2).sum()
    for axis, lag_x in ((-1, True), (-2, False)):
        a, b = (kernel[:, :-1], kernel[:, 1:]) if lag_x else (kernel[:-1, :], kernel[1:, :])
        want = (a * b).sum() / energy
        n = grain.shape[axis]
        got = torch.corrcoef(torch.stack([grain.narrow(axis, 0, n - 1).flatten(), grain.narrow(axis, 1, n - 1).flatten()]))[0, 1]
        assert abs(float(got) - want) < 0.03, f"lag 1 along {'x' if lag_x else 'y'}: {float(got):.3f}, want {want:.3f}"
    assert abs(float(grain.std()) - 6.0) < 0.2


def test_noise_kernel_needs_output_noise_and_an_odd_size():
    with pytest.raises(ValueError, match="noise_kernel needs output_noise"):
        GeneratorConfig(noise_kernel=5)
    with pytest.raises(ValueError, match="noise_kernel must be 0"):
        GeneratorConfig(output_noise=True, noise_kernel=4)
    with pytest.raises(DsganError, match="model.noise_kernel must be 0"):
        load_recipe("idphoto", ["model.noise_kernel=4"])
