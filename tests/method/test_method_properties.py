"""The defining properties of DSGAN, each checked so that breaking it fails a test.

Frequency separation: D judges only high frequencies, the colour loss only low
ones, Xb is an antialiased bicubic downscale, the adversarial signal reaches G
through the real training step, each optimiser step moves only its own
network and in the right direction, resuming continues the optimiser moments
and the data stream, and ``degrade`` is G(bicubic(x)).

Expected values never come from the code under test: references are PIL's
bicubic resize, torch's interpolation called here, and a generator rebuilt
here from the safetensors file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, run_cli, write_images
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

import dsgan_cli.data.sampling as data_mod
import dsgan_cli.method.models as models_mod
from dsgan_cli.method.losses import ColorLoss, GeneratorLoss, LossWeights
from dsgan_cli.method.models import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, downscale
from dsgan_cli.method.recipe import load_recipe

# ----------------------------------------------------------------------------- D sees only high frequencies


@pytest.mark.parametrize("gaussian", [False, True], ids=["box", "gaussian"])
def test_discriminator_ignores_a_constant_offset(gaussian):
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(filter_kernel=5, gaussian=gaussian)).double()
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64) * 0.6 + 0.2
    base = d(x)
    for c in (-0.2, 0.15, 0.3):
        shifted = d(x + c)
        assert torch.allclose(shifted, base, rtol=0, atol=1e-6), (
            f"D's logits change by {(shifted - base).abs().max():.3g} when a constant {c} is added: "
            "D sees low frequencies, it must see only the high-pass"
        )
    # ...while it does respond to high frequencies, so the equality above is not trivial.
    checker = ((torch.arange(20)[:, None] + torch.arange(20)[None, :]) % 2).double() * 0.1
    assert (d(x + checker) - base).abs().max() > 1e-3, "D does not respond to high frequencies at all"


def test_discriminator_input_gradient_has_no_dc_component():
    torch.manual_seed(1)
    d = Discriminator().double()
    x = (torch.rand(2, 3, 18, 22, dtype=torch.float64)).requires_grad_(True)
    d(x).sum().backward()
    dc = x.grad.sum(dim=(-2, -1))  # derivative along a constant offset, per image and channel
    scale = x.grad.abs().sum(dim=(-2, -1))
    assert (scale > 0).all(), "D's input gradient is zero: D ignores its input"
    assert (dc.abs() < 1e-7 * scale).all(), (
        f"D's input gradient has a DC component ({dc.abs().max():.3g}): D's output depends on the image mean"
    )


# ----------------------------------------------------------------------------- colour loss sees only low frequencies


def _period5_pattern(h: int, w: int) -> torch.Tensor:
    """Zero-mean pattern whose every 5x5 box sum is 0 (cosines of period 5 along both axes)."""
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    return (torch.cos(2 * math.pi * i / 5) + torch.cos(4 * math.pi * j / 5)).float()


def test_color_loss_is_blind_to_high_frequencies_and_sees_low_ones():
    torch.manual_seed(2)
    xb = torch.rand(2, 3, 30, 30) * 0.5 + 0.25
    hf = 0.1 * _period5_pattern(30, 30)
    ramp = torch.linspace(-1, 1, 30)[None, :].expand(30, 30)
    lf = 0.05 * ramp + 0.03
    loss = ColorLoss(5)
    hf_loss, lf_loss = loss(xb + hf, xb).item(), loss(xb + lf, xb).item()
    assert hf.abs().mean() > lf.abs().mean(), "test setup: the high-frequency change must be the larger one per pixel"
    assert lf_loss > 0.02, f"colour loss {lf_loss:.3g} for a low-frequency change of Xd: the colour term is blind to colour"
    assert hf_loss < 1e-3 * lf_loss, (
        f"colour loss {hf_loss:.3g} for a high-frequency change of Xd (low-frequency one: {lf_loss:.3g}): "
        "the colour term constrains high frequencies that the GAN term should shape"
    )


# ----------------------------------------------------------------------------- Xb is an antialiased bicubic downscale


def _pil_bicubic(arr: np.ndarray, scale: int) -> np.ndarray:
    """Independent reference: PIL's antialiased bicubic resize of uint8 HWC to the rounded size."""
    h, w = arr.shape[:2]
    return np.asarray(Image.fromarray(arr).resize((round(w / scale), round(h / scale)), Image.Resampling.BICUBIC)).astype(float)


def _random_unclipped(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random uint8 HWC content in 48..207: bicubic overshoot then never reaches 0 or 255.

    PIL rounds and clamps to 8 bits between its horizontal and vertical passes, so on
    saturated content it differs from any float implementation by clipping, not by kernel.
    """
    return np.random.default_rng(seed).integers(48, 208, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("h,w,scale", [(32, 32, 2), (33, 27, 2), (48, 40, 4), (45, 45, 3)])
def test_downscale_is_antialiased_bicubic(h, w, scale):
    # Measured over 200 random images of these sizes: max |ours - PIL| <= 1.01 levels, mean <= 0.30;
    # bilinear, antialiased bilinear, area, nearest and plain bicubic miss by 5-180 levels.
    arr = _random_unclipped((h, w), h * w + scale)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    got = downscale(x, scale)[0].permute(1, 2, 0).numpy() * 255
    ref = _pil_bicubic(arr, scale)
    assert got.shape == ref.shape, f"Xb has shape {got.shape}, bicubic reference {ref.shape}: wrong downscaled size"
    diff = np.abs(got - ref)
    assert diff.max() <= 1.25 and diff.mean() <= 0.4, (
        f"Xb differs from an antialiased bicubic downscale by up to {diff.max():.1f} levels (mean {diff.mean():.2f}): "
        "Xb is not made by antialiased bicubic interpolation"
    )


def test_other_interpolations_fail_the_bicubic_reference():
    """The reference separates the kernels: each alternative misses it by far more than the tolerance."""
    arr = _random_unclipped((32, 32), 7)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    ref = _pil_bicubic(arr, 2)
    for mode, kw in [
        ("bilinear", {"antialias": False}),
        ("bilinear", {"antialias": True}),
        ("bicubic", {"antialias": False}),
        ("area", {}),
        ("nearest", {}),
    ]:
        y = F.interpolate(x, size=(16, 16), mode=mode, **kw).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(y - ref).max() > 4, f"{mode} {kw} is within 4 levels of bicubic: the reference cannot tell kernels apart"


# ----------------------------------------------------------------------------- the GAN term drives G


def test_gan_term_alone_gives_gradient_to_every_generator_parameter():
    torch.manual_seed(3)
    g, d = Generator(GeneratorConfig(n_res_blocks=2, channels=8)), Discriminator()
    crit = GeneratorLoss(LossWeights(w_color=0.0, w_gan=1.0, w_perceptual=0.0))
    xb = torch.rand(2, 3, 20, 20)
    xd = g(xb)
    total, _ = crit(xd, xb, d(xd))
    assert total.requires_grad, "the generator loss does not depend on G: the adversarial signal is cut"
    total.backward()
    dead = [n for n, p in g.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead, f"GAN term gives no gradient to G parameters {dead}: the adversarial signal is cut"


class _Recorded:
    """What an instrumented training run saw: initial weights, per-step parameter changes, D/G progress."""

    def __init__(self):
        self.g_init: dict[str, torch.Tensor] = {}
        self.g: Generator | None = None
        self.d: Discriminator | None = None
        self.d_inputs: list[torch.Tensor] = []
        self.g_inputs: list[torch.Tensor] = []
        self.steps: list[dict] = []


def _instrument(monkeypatch) -> _Recorded:
    """Record G's initial weights, the inputs G and D see, and what every optimiser step changes.

    Uses the public global optimiser step hooks; D's BatchNorm running statistics are restored after
    each probe, so the probes leave the run's state untouched.
    """
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    rec = _Recorded()

    class RecordingGenerator(Generator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            rec.g = self
            rec.g_init = {k: v.detach().clone() for k, v in self.state_dict().items()}
            self.register_forward_pre_hook(lambda m, args: rec.g_inputs.append(args[0].detach().clone()))

    class RecordingDiscriminator(Discriminator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            rec.d = self
            self.register_forward_pre_hook(lambda m, args: rec.d_inputs.append(args[0].detach().clone()))

    monkeypatch.setattr(models_mod, "Generator", RecordingGenerator)
    monkeypatch.setattr(models_mod, "Discriminator", RecordingDiscriminator)

    def snapshot(module):
        return [p.detach().clone() for p in module.parameters()]

    def probe():
        """Mean D logits on the last real and fake batches of the D step, and -log D(G(Xb)) on the last Xb.

        (Around a G step the "real"/"fake" entries see other batches; only "g_bce" is used there.)
        """
        saved = {k: v.clone() for k, v in rec.d.named_buffers()}
        with torch.no_grad():
            real, fake = rec.d_inputs[-2], rec.d_inputs[-1]
            fooled = rec.d(rec.g(rec.g_inputs[-1]))
            # -log(sigmoid(l)) == softplus(-l): G's non-saturating objective, written out here.
            out = {"real": rec.d(real).mean().item(), "fake": rec.d(fake).mean().item(), "g_bce": F.softplus(-fooled).mean().item()}
        with torch.no_grad():
            for k, v in rec.d.named_buffers():
                v.copy_(saved[k])
        rec.d_inputs = rec.d_inputs[:-3]
        rec.g_inputs = rec.g_inputs[:-1]
        return out

    state: dict = {}

    def pre(opt, args, kwargs):
        state["g"], state["d"] = snapshot(rec.g), snapshot(rec.d)
        state["probe"] = probe()

    def post(opt, args, kwargs):
        own = {id(p) for group in opt.param_groups for p in group["params"]}
        which = "G" if any(id(p) in own for p in rec.g.parameters()) else "D"
        changed = {
            name: [not torch.equal(a, b) for a, b in zip(state[name.lower()], snapshot(module))]
            for name, module in (("G", rec.g), ("D", rec.d))
        }
        rec.steps.append({"optimizer": which, "changed": changed, "before": state["probe"], "after": probe()})

    rec.handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    return rec


def _train(tmp_path: Path, name: str, *sets: str, resume: str | None = None):
    """Run the real training loop (dsgan_cli.engines.train.train) on tiny 16/8 px data."""
    from dsgan_cli.engines.train import train

    data = tmp_path / "data"
    if not data.exists():
        write_images(data / "hr", 6, 16, seed=0)
        write_images(data / "lr", 6, 8, seed=1, noise=12)
    base = [
        "data.hr_size=16",
        "data.lr_size=8",
        "train.batch_size=2",
        "data.num_workers=0",
        "loss.w_perceptual=0",
        "train.sample_every=100",
        f"data.hr_dir={json.dumps(str(data / 'hr'))}",
        f"data.lr_dir={json.dumps(str(data / 'lr'))}",
        f"train.output_dir={json.dumps(str(tmp_path / name))}",
    ]
    return train(load_recipe(TINY_RECIPE, [*base, *sets]), resume=resume, progress=False)


@pytest.fixture(scope="module")
def instrumented_gan_only_run(tmp_path_factory):
    """Two real training steps with only the GAN term (colour and perceptual weights 0), run once per module."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        rec = _instrument(monkeypatch)
        try:
            result = _train(tmp_path_factory.mktemp("gan_only"), "gan", "loss.w_color=0", "train.iterations=2")
        finally:
            for h in rec.handles:
                h.remove()
    return rec, load_file(result.generator_path)


def test_training_step_gan_term_alone_moves_every_generator_parameter(instrumented_gan_only_run):
    rec, final = instrumented_gan_only_run
    unchanged = [k for k, v in rec.g_init.items() if torch.equal(v, final[k])]
    assert not unchanged, (
        f"GAN term gives no gradient to G: the adversarial signal is cut ({len(unchanged)} of {len(final)} "
        f"generator tensors did not move in training steps with only the GAN term, e.g. {unchanged[:3]})"
    )


def test_training_step_without_any_loss_term_leaves_generator_unchanged(tmp_path, monkeypatch):
    rec = _instrument(monkeypatch)
    try:
        result = _train(tmp_path, "none", "loss.w_color=0", "loss.w_gan=0", "train.iterations=2")
    finally:
        for h in rec.handles:
            h.remove()
    final = load_file(result.generator_path)
    moved = [k for k, v in rec.g_init.items() if not torch.equal(v, final[k])]
    assert not moved, f"G moved although every generator loss weight is 0: G is trained by something else ({moved[:3]})"


def test_each_optimiser_step_moves_only_its_own_network(instrumented_gan_only_run):
    rec, _ = instrumented_gan_only_run
    assert [s["optimizer"] for s in rec.steps] == ["D", "G", "D", "G"], (
        f"optimiser steps ran as {[s['optimizer'] for s in rec.steps]}: each training step must be D step, then G step"
    )
    for i, s in enumerate(rec.steps):
        own, other = s["optimizer"], "G" if s["optimizer"] == "D" else "D"
        assert not any(s["changed"][other]), f"the {own} step (#{i}) changed {other}'s parameters: the steps are not separated"
        assert all(s["changed"][own]), f"the {own} step (#{i}) left some of {own}'s parameters unchanged"


def test_discriminator_step_pushes_real_up_and_fake_down(instrumented_gan_only_run):
    rec, _ = instrumented_gan_only_run
    for s in (s for s in rec.steps if s["optimizer"] == "D"):
        b, a = s["before"], s["after"]
        assert a["real"] - a["fake"] > b["real"] - b["fake"], (
            f"after the D step the logit gap real - fake went from {b['real'] - b['fake']:.4f} to "
            f"{a['real'] - a['fake']:.4f}: D is not trained towards real -> 1, fake -> 0"
        )


def test_generator_step_makes_d_call_its_output_more_real(instrumented_gan_only_run):
    rec, _ = instrumented_gan_only_run
    for s in (s for s in rec.steps if s["optimizer"] == "G"):
        b, a = s["before"]["g_bce"], s["after"]["g_bce"]
        assert a < b, f"after the G step -log D(G(Xb)) went from {b:.5f} to {a:.5f}: G is not trained to make D call its output real"


# ----------------------------------------------------------------------------- resume continues, it does not restart


def _record_batches(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record every (HR, real LR) micro-batch the training loop draws (num_workers=0: drawn in this process)."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_getitem = data_mod.MicroBatches.__getitem__

    def recording(self, m):
        hr, lr = real_getitem(self, m)
        seen.append((hr.clone(), lr.clone()))
        return hr, lr

    monkeypatch.setattr(data_mod.MicroBatches, "__getitem__", recording)
    return seen


def _optimizer_state(ckpt: Path, index: int) -> dict:
    """Adam state of optimiser ``index`` (0 = G, 1 = D, in the order the loop prepares them) in a checkpoint."""
    name = "optimizer.bin" if index == 0 else f"optimizer_{index}.bin"
    return torch.load(ckpt / name, map_location="cpu", weights_only=True)["state"]


def test_resume_restores_optimiser_moments_and_continues_the_data_stream(tmp_path, monkeypatch):
    opts = ("train.checkpoint_every=1", "data.flip=true", "data.crop_size=6")
    straight_batches = _record_batches(monkeypatch)
    straight = _train(tmp_path, "straight", "train.iterations=3", *opts)
    monkeypatch.undo()
    _train(tmp_path, "resumed", "train.iterations=2", *opts)
    resumed_batches = _record_batches(monkeypatch)
    resumed = _train(tmp_path, "resumed", "train.iterations=3", *opts, resume="latest")

    assert len(straight_batches) == 3 and len(resumed_batches) == 1
    hr, lr = resumed_batches[0]
    assert not torch.equal(hr, straight_batches[0][0]) or not torch.equal(lr, straight_batches[0][1]), (
        "the resumed run drew the first batch of the run again: the data stream restarts instead of continuing"
    )
    assert torch.equal(hr, straight_batches[2][0]) and torch.equal(lr, straight_batches[2][1]), (
        "the resumed run's first batch is not the batch an uninterrupted run draws at that step: the data stream does not continue"
    )

    for index, net in ((0, "G"), (1, "D")):
        a, b = _optimizer_state(straight.checkpoint_dir, index), _optimizer_state(resumed.checkpoint_dir, index)
        assert a.keys() == b.keys() and a, f"{net}'s optimiser state is missing from the checkpoint"
        for pid in a:
            assert float(b[pid]["step"]) == float(a[pid]["step"]) == 3, (
                f"{net}'s Adam step count is {float(b[pid]['step'])} after resuming to step 3: the optimiser was restarted"
            )
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(a[pid][moment], b[pid][moment], rtol=1e-5, atol=1e-9), (
                    f"{net}'s Adam {moment} after resume differs from an uninterrupted run: resume did not restore the optimiser moments"
                )


# ----------------------------------------------------------------------------- degrade is G(bicubic(x))


@pytest.mark.slow
def test_degrade_output_is_generator_of_bicubic_downscale(tmp_path):
    """Batched, tiled and odd-size inputs through the real CLI, against G rebuilt here from the safetensors file."""
    from dsgan_cli.engines.checkpoint import save_generator

    torch.manual_seed(5)
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=16))
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # larger than the init: outputs far from flat
    ckpt = tmp_path / "generator.safetensors"
    save_generator(g, ckpt, step=1, scale=2)

    inp = tmp_path / "hr"
    inp.mkdir()
    rng = np.random.default_rng(0)
    # --tile 12 --batch-size 3: four 16x16 (LR 8x8) run as batches of 3 and 1, 21x17 (LR 10x8, odd) whole,
    # 60x44 (LR 30x22) and 51x37 (LR 26x18, odd) in 12 px tiles.
    sizes = {"a0": (16, 16), "a1": (16, 16), "a2": (16, 16), "a3": (16, 16), "odd": (21, 17), "big": (60, 44), "big_odd": (51, 37)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inp / f"{name}.png")
    res = run_cli("degrade", inp, tmp_path / "out", "--checkpoint", ckpt, "--tile", "12", "--batch-size", "3", "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["written"] == len(sizes)

    ref = Generator(GeneratorConfig(n_res_blocks=2, channels=16))
    ref.load_state_dict(load_file(ckpt))
    ref.eval()
    for name, (h, w) in sizes.items():
        x = torch.from_numpy(np.array(Image.open(inp / f"{name}.png"))).permute(2, 0, 1)[None].float() / 255
        xb = F.interpolate(x, size=(round(h / 2), round(w / 2)), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        with torch.no_grad():
            want = ref(xb)[0].permute(1, 2, 0).mul(255).round().numpy()
        got = np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).astype(float)
        assert got.shape == want.shape, f"{name}: degrade wrote {got.shape}, G(bicubic(x)) is {want.shape}"
        diff = np.abs(got - want)
        # Equal up to float summation order: a value on a rounding boundary may move by one level.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (
            f"{name} ({h}x{w}): degrade's output differs from G(bicubic(x)) by up to {diff.max():.0f} levels "
            f"on {(diff > 0).mean():.1%} of values: degrade does not compute G(bicubic(x))"
        )


# ----------------------------------------------------------------------------- unpaired, scale-aligned training data


def _labelled(n: int, size: int) -> torch.Tensor:
    """``n`` uint8 images whose pixels encode (image index, row, column), so any crop can be located."""
    i = torch.arange(n)[:, None, None, None]
    y = torch.arange(size)[None, None, :, None]
    x = torch.arange(size)[None, None, None, :]
    channels = torch.cat([i.expand(n, 1, size, size), y.expand(n, 1, size, size), x.expand(n, 1, size, size)], dim=1)
    return channels.to(torch.uint8)


def test_hr_and_real_lr_are_drawn_unpaired():
    n = 8
    ds = data_mod.MicroBatches(_labelled(n, 4), _labelled(n, 2), batch_size=n, seed=3)
    for m in range(3):
        hr, lr = ds[m]
        hr_ids, lr_ids = hr[:, 0, 0, 0].tolist(), lr[:, 0, 0, 0].tolist()
        assert sorted(hr_ids) == sorted(lr_ids) == list(range(n)), "an epoch must show every image once"
        assert hr_ids != lr_ids, "HR image i always meets real LR image i: the sets are paired, DSGAN needs them unpaired"


def test_hr_crops_are_aligned_to_the_scale():
    scale, crop = 3, 4
    ds = data_mod.MicroBatches(_labelled(4, 30), _labelled(4, 10), batch_size=4, seed=1, crops=data_mod.Crops(scale=scale, crop_size=crop))
    tops, lefts = set(), set()
    for m in range(6):
        hr, lr = ds[m]
        assert hr.shape[-2:] == (crop * scale, crop * scale) and lr.shape[-2:] == (crop, crop)
        for img in hr:
            top, left = int(img[1, 0, 0]), int(img[2, 0, 0])
            assert torch.equal(img[1, :, 0], torch.arange(top, top + crop * scale, dtype=torch.uint8)), "HR crop is not contiguous"
            assert top % scale == 0 and left % scale == 0, (
                f"HR crop at ({top}, {left}) is not on the {scale}-pixel grid: its Xb is not a crop of the full image's Xb"
            )
            tops.add(top), lefts.add(left)
    assert len(tops) > 1 and len(lefts) > 1, "crops never move: random cropping is off"


# ----------------------------------------------------------------------------- degrade's core, piece by piece


def _noisy_generator() -> Generator:
    """A small G with output noise (three noise channels) and weights far from flat."""
    torch.manual_seed(8)
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=8, output_noise=True, output="residual")).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return g


def test_image_noise_is_per_image_seeded_and_independent_of_the_batch():
    from dsgan_cli.engines.generate import image_noise

    g = _noisy_generator()
    x = torch.rand(3, 3, 10, 12)
    z = image_noise(g, x, ["a.png", "sub/b.png", "c.png"], seed=4)
    assert z.shape == (3, 3, 10, 12), f"noise shape {tuple(z.shape)}: one map per image with G's noise channels"
    assert abs(z.mean()) < 0.1 and 0.85 < z.std() < 1.15, "G's noise input is not N(0, 1)"
    alone = image_noise(g, x[1:2], ["sub/b.png"], seed=4)
    assert torch.equal(alone[0], z[1]), "an image's noise depends on its batch: outputs would change with the batch size"
    assert torch.equal(image_noise(g, x, ["a.png", "sub/b.png", "c.png"], seed=4), z), "a rerun draws other noise"
    assert not torch.equal(z[0], z[2]), "two images got the same noise map"
    assert not torch.equal(image_noise(g, x[:1], ["a.png"], seed=5)[0], z[0]), "the seed does not change the noise"
    assert image_noise(Generator(GeneratorConfig(n_res_blocks=1, channels=4)), x, ["a", "b", "c"], seed=4) is None


def test_tiled_generation_cuts_the_noise_map_with_the_image():
    from dsgan_cli.engines.generate import generate_tiled

    g = _noisy_generator()
    torch.manual_seed(9)
    # 31 x 41 with tiles of 6: interior tiles have a margin on all four sides
    x = torch.rand(1, 3, 31, 41)
    z = torch.randn(1, 3, 31, 41)
    with torch.no_grad():
        whole = g(x, z)
    for tile in (6, 9, 50):
        tiled = generate_tiled(g, x, tile, torch.device("cpu"), noise=z)
        assert tiled.shape == whole.shape, f"tile {tile}: stitched output has shape {tuple(tiled.shape)}, the image {tuple(whole.shape)}"
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0), (
            f"tile {tile}: tiled G(x, z) differs from the whole-image pass by {(tiled - whole).abs().max():.3g}: "
            "the tiles or the noise map are not cut and stitched consistently"
        )
    calls = []
    handle = g.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape[-2:])))
    try:
        generate_tiled(g, x, 9, torch.device("cpu"), noise=z)
    finally:
        handle.remove()
    assert len(calls) == 4 * 5, f"{len(calls)} generator passes for 4 x 5 tiles of 9 px: each tile must be computed once"
    plain = Generator(GeneratorConfig(n_res_blocks=2, channels=8)).eval()
    with torch.no_grad():
        want = plain(x)
    assert torch.allclose(generate_tiled(plain, x, 9, torch.device("cpu")), want, atol=1e-5, rtol=0), (
        "tiled generation without a noise input differs from the whole-image pass"
    )


@pytest.mark.parametrize("channels_last", [False, True])
def test_run_generator_is_g_in_float32_and_reduced_precision_only_when_asked(channels_last):
    from dsgan_cli.engines.generate import run_generator

    g = _noisy_generator()
    x, z = torch.rand(2, 3, 9, 7), torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        want = g(x, z)
    got = run_generator(g, x, torch.device("cpu"), "fp32", channels_last, z)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6), "run_generator is not G(x, noise) in fp32"
    default = run_generator(g, x, torch.device("cpu"), noise=z)
    assert torch.allclose(default, want, atol=1e-6), "run_generator's default precision is not fp32"
    plain = Generator(GeneratorConfig(n_res_blocks=1, channels=4)).eval()
    with torch.no_grad():
        assert torch.allclose(run_generator(plain, x, torch.device("cpu"), "fp32", channels_last), plain(x), atol=1e-6), (
            "run_generator without a noise input is not G(x)"
        )
    errors = {}
    for precision in ("bf16", "fp16"):
        low = run_generator(g, x, torch.device("cpu"), precision, channels_last, z)
        assert low.dtype == torch.float32, f"{precision} output must be returned as float32"
        errors[precision] = (low - want).abs().max().item()
    assert 0 < errors["fp16"] < errors["bf16"] < 0.05, (
        f"max error against fp32: bf16 {errors['bf16']:.3g}, fp16 {errors['fp16']:.3g}: each reduced precision must run "
        "in its own dtype (fp16 keeps 3 more mantissa bits than bf16)"
    )


def test_to_uint8_rounds_to_nearest_clamps_and_moves_channels_last():
    from dsgan_cli.data.images import to_uint8

    y = torch.tensor([-0.3, 0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 0.5, 254.4 / 255, 1.0, 1.7]).view(1, 1, 3, 3)
    y = torch.cat([y, y * 0 + 0.2, y * 0 + 0.8], dim=1)  # (1, 3, 3, 3): channel 1 = 51, channel 2 = 204
    out = to_uint8(y)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 3, 3)
    assert out[0, :, :, 0].flatten().tolist() == [0, 0, 0, 1, 2, 128, 254, 255, 255], (
        f"got {out[0, :, :, 0].flatten().tolist()}: values are not clamped to [0, 1] and rounded to the nearest level"
    )
    assert (out[0, :, :, 1] == 51).all() and (out[0, :, :, 2] == 204).all(), "channels are not moved last (HWC)"


def _items(sizes, failed=(), modes=None):
    """Decoded items as DecodeDataset yields them: (i, Xb, mode, error, HR)."""
    modes = modes or {}
    for i, hw in enumerate(sizes):
        if i in failed:
            yield i, None, None, "broken", None
        else:
            yield i, torch.full((3, *hw), float(i)), modes.get(i), None, None


def test_iter_batches_groups_same_sizes_tiles_large_images_and_passes_failures():
    from dsgan_cli.engines.input_batches import iter_batches

    sizes = [(4, 4), (4, 6), (4, 4), (9, 4), (4, 4), (3, 3), (4, 6), (8, 8), (4, 4), (4, 9), (2, 2)]
    events = list(iter_batches(_items(sizes, failed={5}, modes={2: "L"}), batch_size=2, tile=8, channels_last=False))
    seen, tiled = [], []
    for ev in events:
        if ev[0] == "batch":
            _, idx, x, _ = ev
            assert len(idx) <= 2, f"batch of {len(idx)} > batch_size 2"
            assert len({sizes[i] for i in idx}) == 1, f"batch {idx} mixes sizes"
            assert x.shape == (len(idx), 3, *sizes[idx[0]]) and [int(v) for v in x[:, 0, 0, 0]] == idx, (
                "batch tensor is not the stacked images"
            )
            seen += idx
        elif ev[0] == "tiled":
            _, (i,), x, _ = ev
            assert x.shape == (1, 3, *sizes[i]), f"tiled image {i} has shape {tuple(x.shape)}"
            seen.append(i)
            tiled.append(i)
    assert sorted(seen) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10], (
        f"generated {sorted(seen)}: every decoded image must be generated exactly once, also after a failed one"
    )
    assert sorted(tiled) == [3, 9], f"tiled images {sorted(tiled)}: exactly those taller or wider than the tile (9x4 and 4x9) must be tiled"
    assert ("failed", 5, "broken") in events and ("mode", "L") in events
    full = [ev[1] for ev in events if ev[0] == "batch" and len(ev[1]) == 2]
    assert [0, 2] in full and [4, 8] in full and [1, 6] in full, f"same-size images are not batched together: {full}"
    # large images: at most BATCH_PIXEL_BUDGET (2**20) pixels per batch, and never less than one image
    big = list(iter_batches(_items([(800, 700)] * 3 + [(600, 600)] * 5), batch_size=4, tile=None, channels_last=False))
    assert [ev[1] for ev in big] == [[0], [1], [2], [3, 4], [5, 6], [7]], (
        f"large-image batches {[ev[1] for ev in big]}: batches must hold at most 2**20 pixels and at least one image"
    )
    no_tile = list(iter_batches(_items([(9, 4), (8, 8)]), batch_size=4, tile=None, channels_last=True))
    assert [ev[0] for ev in no_tile] == ["batch", "batch"]
    assert no_tile[0][2].is_contiguous(memory_format=torch.channels_last), "channels_last batches were asked for"


def test_iter_batches_does_not_hoard_many_distinct_sizes():
    from dsgan_cli.engines.input_batches import iter_batches

    sizes = [(4, 4 + i) for i in range(12)]  # all different: no bucket ever fills
    consumed = []

    def counted():
        for item in _items(sizes):
            consumed.append(item[0])
            yield item

    events = iter_batches(counted(), batch_size=2, tile=None, channels_last=False)
    first = next(events)
    assert first[0] == "batch" and len(consumed) == 9, (
        f"the first batch came out after {len(consumed)} of 12 images: with many distinct sizes, a partial batch "
        "must run once more than 4 * batch_size images wait"
    )
    rest = [ev for ev in events if ev[0] == "batch"]
    assert sorted(i for ev in [first, *rest] for i in ev[1]) == list(range(12)), "some images were lost or repeated"
    # the partial batch that runs is the fullest one
    sizes = [(4, 4), (4, 4)] + [(5, 5 + i) for i in range(11)]
    first = next(iter_batches(_items(sizes), batch_size=3, tile=None, channels_last=False))
    assert first[1] == [0, 1], f"the first partial batch is {first[1]}, not the fullest bucket [0, 1]"


def test_decode_dataset_yields_the_bicubic_downscale_and_reports_bad_files(tmp_path):
    from dsgan_cli.engines.input_batches import DecodeDataset

    rng = np.random.default_rng(3)
    arr = _random_unclipped((22, 18), 3)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8)).save(tmp_path / "gray.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    ds = DecodeDataset([tmp_path / "a.png", tmp_path / "gray.png", tmp_path / "bad.png", tmp_path / "gone.png"], 2)
    assert len(ds) == 4
    i, xb, mode, err, _ = ds[0]
    assert i == 0 and mode is None and err is None and xb.shape == (3, 11, 9)
    diff = np.abs(xb.permute(1, 2, 0).numpy() * 255 - _pil_bicubic(arr, 2))
    assert diff.max() <= 1.25, f"degrade's Xb differs from an antialiased bicubic downscale by {diff.max():.2f} levels"
    assert ds[1][2] == "L" and ds[1][1].shape == (3, 5, 5), "a converted mode must be reported"
    for j in (2, 3):
        k, xb, _, err, _ = ds[j]
        assert k == j and xb is None and err, f"item {j}: a bad or missing file must give an error reason, not raise"


# ----------------------------------------------------------------------------- the training step's helpers, one by one


def _toy_nets():
    """A small G and D and two micro-batches of (Xb, real LR), seeded."""
    torch.manual_seed(12)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=4))
    d = Discriminator()
    xbs = [torch.rand(2, 3, 10, 10) for _ in range(2)]
    reals = [torch.rand(2, 3, 10, 10) * 0.5 + 0.25 for _ in range(2)]
    return g, d, xbs, reals


def _accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("keep_graph", [True, False])
def test_discriminator_step_is_one_sgd_step_on_the_mean_micro_batch_loss(keep_graph):
    """Real -> 1, detached G(Xb) -> 0, averaged over the micro-batches; reference loss written out here with softplus."""
    import copy

    from dsgan_cli.engines.train import StepInputs, StepMode, discriminator_step

    g, d, xbs, reals = _toy_nets()
    ref = copy.deepcopy(d)
    with torch.no_grad():
        fakes = [g(xb) for xb in xbs]
    # -log sigmoid(l) = softplus(-l); -log(1 - sigmoid(l)) = softplus(l)
    real_logits = [ref(r) for r in reals]
    fake_logits = [ref(f) for f in fakes]
    want_loss = sum(F.softplus(-rl).mean() + F.softplus(fl).mean() for rl, fl in zip(real_logits, fake_logits)) / 2
    want_loss.backward()
    lr = 0.5
    want = [p.detach() - lr * p.grad for p in ref.parameters()]
    g_before = _params(g)

    xds, stats = discriminator_step(
        _accelerator(), g, d, torch.optim.SGD(d.parameters(), lr=lr), StepInputs(xbs, reals), StepMode(keep_graph=keep_graph)
    )

    for i, (p, w) in enumerate(zip(d.parameters(), want)):
        assert torch.allclose(p, w, atol=1e-5), (
            f"D parameter {i} after the D step is not one step down the mean over micro-batches of "
            "-log D(real) - log(1 - D(G(Xb))): wrong labels, wrong scaling or a micro-batch left out"
        )
    assert all(torch.equal(a, b) for a, b in zip(g_before, _params(g))), "the D step changed G"
    assert all(p.grad is None for p in g.parameters()), "the D step sent gradients into G: Xd is not detached"
    assert abs(stats["loss_d"].item() - want_loss.item()) < 1e-5, "the reported D loss is not the mean micro-batch loss"
    want_real = sum(torch.sigmoid(rl).mean() for rl in real_logits).item() / 2
    want_fake = sum(torch.sigmoid(fl).mean() for fl in fake_logits).item() / 2
    assert abs(stats["d_real"].item() - want_real) < 1e-5 and abs(stats["d_fake"].item() - want_fake) < 1e-5, (
        "d_real / d_fake are not D's mean probabilities on the real and generated micro-batches"
    )
    assert all(ref is xb for (_, _, ref), xb in zip(xds, xbs)), "without a learned blur the content reference is Xb"
    xds = [x for x, _, _ in xds]
    assert len(xds) == 2 and all(torch.allclose(x, f, atol=1e-6) for x, f in zip(xds, fakes)), "returned Xd is not G(Xb)"
    assert all(x.requires_grad == keep_graph for x in xds), f"keep_graph={keep_graph}: Xd {'lost' if keep_graph else 'kept'} its graph"


class _FeaturePerceptual(torch.nn.Module):
    """A perceptual term: squared distance of channel means; records the precomputed features it is given."""

    def __init__(self):
        super().__init__()
        self.given = []

    def features(self, x):
        return [x.mean(dim=(2, 3))]

    def forward(self, x, y=None, y_feats=None):
        self.given.append(y_feats)
        return (x.mean(dim=(2, 3)) - y_feats[0]).pow(2).sum(dim=1).mean()


@pytest.mark.parametrize("keep_graph", [True, False])
def test_generator_step_is_one_sgd_step_on_the_mean_weighted_loss_against_a_frozen_d(keep_graph):
    """Colour (valid 5x5 box low-pass L1), GAN (-log D(Xd)) and perceptual terms written out here."""
    import copy

    from dsgan_cli.engines.train import StepInputs, StepMode, generator_step
    from dsgan_cli.method.losses import GeneratorLoss

    g, d, xbs, reals = _toy_nets()
    perceptual = _FeaturePerceptual()
    crit = GeneratorLoss(LossWeights(w_color=0.5, w_gan=2.0, w_perceptual=0.25), perceptual=perceptual)
    ref = copy.deepcopy(g)
    d_ref = copy.deepcopy(d)
    parts = {"loss_color": 0.0, "loss_gan": 0.0, "loss_perceptual": 0.0}
    for xb in xbs:
        xd = ref(xb)
        color = (F.avg_pool2d(xd, 5, stride=1) - F.avg_pool2d(xb, 5, stride=1)).abs().mean()
        gan = F.softplus(-d_ref(xd)).mean()
        perc = (xd.mean(dim=(2, 3)) - xb.mean(dim=(2, 3))).pow(2).sum(dim=1).mean()
        ((0.5 * color + 2.0 * gan + 0.25 * perc) / 2).backward()
        for k, v in (("loss_color", color), ("loss_gan", gan), ("loss_perceptual", perc)):
            parts[k] += v.item() / 2
    lr = 0.5
    want = [p.detach() - lr * p.grad for p in ref.parameters()]
    d_before = _params(d)
    xds = (
        [g(xb, with_deterministic=True) for xb in xbs]
        if keep_graph
        else [tuple(t.detach() for t in g(xb, with_deterministic=True)) for xb in xbs]
    )
    g_passes = []
    handle = g.register_forward_pre_hook(lambda m, args: g_passes.append(1))
    try:
        stats = generator_step(
            _accelerator(), g, d, torch.optim.SGD(g.parameters(), lr=lr), crit, StepInputs(xbs, reals), xds, StepMode(keep_graph=keep_graph)
        )
    finally:
        handle.remove()
    assert len(g_passes) == (0 if keep_graph else 2), (
        f"keep_graph={keep_graph}: the G step ran G {len(g_passes)} times; it must reuse the D step's Xd when the graph "
        "is kept and recompute it (once per micro-batch) only under accumulation"
    )

    for i, (p, w) in enumerate(zip(g.parameters(), want)):
        assert torch.allclose(p, w, atol=1e-5), (
            f"G parameter {i} after the G step is not one step down the mean over micro-batches of "
            "w_color * colour + w_gan * (-log D(Xd)) + w_perceptual * perceptual"
        )
    assert all(torch.equal(a, b) for a, b in zip(d_before, _params(d))), "the G step changed D"
    assert all(p.grad is None for p in d.parameters()), "the G step left gradients in D (D must be frozen there)"
    assert all(p.requires_grad for p in d.parameters()), "D stays frozen after the G step: the next D step cannot train it"
    assert set(stats) == {"loss_g", "loss_color", "loss_gan", "loss_perceptual"}, f"reported {sorted(stats)}"
    for k, v in parts.items():
        assert abs(stats[k].item() - v) < 1e-5, f"{k} reported {stats[k].item():.6f}, the micro-batch mean is {v:.6f}"
    want_total = 0.5 * parts["loss_color"] + 2.0 * parts["loss_gan"] + 0.25 * parts["loss_perceptual"]
    assert abs(stats["loss_g"].item() - want_total) < 1e-5, "the reported G loss is not the mean weighted total"
    assert len(perceptual.given) == 2 and all(torch.allclose(f[0], xb.mean(dim=(2, 3))) for f, xb in zip(perceptual.given, xbs)), (
        "the perceptual term was not given the features of its own micro-batch's Xb"
    )


def test_generator_step_without_a_perceptual_term():
    from dsgan_cli.engines.train import StepInputs, generator_step
    from dsgan_cli.method.losses import GeneratorLoss

    g, d, xbs, reals = _toy_nets()
    crit = GeneratorLoss(LossWeights(w_color=1.0, w_gan=1.0, w_perceptual=0.0))
    stats = generator_step(
        _accelerator(),
        g,
        d,
        torch.optim.SGD(g.parameters(), lr=0.1),
        crit,
        StepInputs(xbs, reals),
        [g(xb, with_deterministic=True) for xb in xbs],
    )
    assert set(stats) == {"loss_g", "loss_color", "loss_gan"}, f"reported {sorted(stats)} without a perceptual network"


def test_next_inputs_downscales_hr_to_xb_and_scales_real_lr():
    from dsgan_cli.engines.train import next_inputs

    hr = [torch.from_numpy(_random_unclipped((16, 12), s)).permute(2, 0, 1)[None] for s in (1, 2, 3)]
    lr = [torch.randint(0, 256, (1, 3, 8, 6), generator=torch.Generator().manual_seed(s), dtype=torch.uint8) for s in (1, 2, 3)]
    batches = iter(list(zip(hr, lr)))
    batch = next_inputs(batches, 2, torch.device("cpu"), 2, {"G": torch.channels_last, "D": torch.contiguous_format})
    xbs, reals = batch.xbs, batch.reals
    assert batch.origin is None, "without a JPEG stage on whole images there is no origin to pass"
    assert len(xbs) == len(reals) == 2, "next_inputs must draw grad_accum micro-batches"
    for m in range(2):
        ref = _pil_bicubic(hr[m][0].permute(1, 2, 0).numpy(), 2)
        diff = np.abs(xbs[m][0].permute(1, 2, 0).numpy() * 255 - ref)
        assert diff.max() <= 1.25, f"micro-batch {m}: Xb differs from the bicubic downscale of HR by {diff.max():.2f} levels"
        assert torch.equal(reals[m], lr[m].float() / 255), f"micro-batch {m}: real LR is not the uint8 batch / 255"
        assert xbs[m].is_contiguous(memory_format=torch.channels_last), "Xb is not in G's memory format"
        assert reals[m].is_contiguous(), "real LR is not in D's memory format"
    assert torch.equal(next(batches)[0], hr[2]), "next_inputs drew more micro-batches than asked"


def test_set_lr_sets_every_group_of_every_optimiser():
    from dsgan_cli.engines.train import set_lr

    a, b, c = (torch.nn.Parameter(torch.zeros(1)) for _ in range(3))
    opts = (torch.optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.3}], lr=0.1), torch.optim.SGD([c], lr=0.2))
    set_lr(opts, 0.0125)
    assert [g["lr"] for o in opts for g in o.param_groups] == [0.0125] * 3
