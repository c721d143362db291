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
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

import dsgan_cli.data as data_mod
import dsgan_cli.models as models_mod
from conftest import TINY_RECIPE, run_cli, write_images
from dsgan_cli.losses import ColorLoss, GeneratorLoss
from dsgan_cli.models import Discriminator, Generator, downscale
from dsgan_cli.recipe import load_recipe

# ----------------------------------------------------------------------------- D sees only high frequencies


@pytest.mark.parametrize("gaussian", [False, True], ids=["box", "gaussian"])
def test_discriminator_ignores_a_constant_offset(gaussian):
    torch.manual_seed(0)
    d = Discriminator(5, gaussian=gaussian).double()
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64) * 0.6 + 0.2
    base = d(x)
    for c in (-0.2, 0.15, 0.3):
        shifted = d(x + c)
        assert torch.allclose(shifted, base, rtol=0, atol=1e-6), (
            f"D's logits change by {(shifted - base).abs().max():.3g} when a constant {c} is added: "
            "D sees low frequencies, it must see only the high-pass")
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
        f"D's input gradient has a DC component ({dc.abs().max():.3g}): D's output depends on the image mean")


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
    assert (hf.abs().mean() > lf.abs().mean()), "test setup: the high-frequency change must be the larger one per pixel"
    assert lf_loss > 0.02, f"colour loss {lf_loss:.3g} for a low-frequency change of Xd: the colour term is blind to colour"
    assert hf_loss < 1e-3 * lf_loss, (
        f"colour loss {hf_loss:.3g} for a high-frequency change of Xd (low-frequency one: {lf_loss:.3g}): "
        "the colour term constrains high frequencies that the GAN term should shape")


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
        "Xb is not made by antialiased bicubic interpolation")


def test_other_interpolations_fail_the_bicubic_reference():
    """The reference separates the kernels: each alternative misses it by far more than the tolerance."""
    arr = _random_unclipped((32, 32), 7)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    ref = _pil_bicubic(arr, 2)
    for mode, kw in [("bilinear", {"antialias": False}), ("bilinear", {"antialias": True}),
                     ("bicubic", {"antialias": False}), ("area", {}), ("nearest", {})]:
        y = F.interpolate(x, size=(16, 16), mode=mode, **kw).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(y - ref).max() > 4, f"{mode} {kw} is within 4 levels of bicubic: the reference cannot tell kernels apart"


# ----------------------------------------------------------------------------- the GAN term drives G


def test_gan_term_alone_gives_gradient_to_every_generator_parameter():
    torch.manual_seed(3)
    g, d = Generator(n_res_blocks=2, channels=8), Discriminator()
    crit = GeneratorLoss(w_color=0.0, w_gan=1.0, w_perceptual=0.0)
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
            out = {"real": rec.d(real).mean().item(), "fake": rec.d(fake).mean().item(),
                   "g_bce": F.softplus(-fooled).mean().item()}
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
        changed = {name: [not torch.equal(a, b) for a, b in zip(state[name.lower()], snapshot(module))]
                   for name, module in (("G", rec.g), ("D", rec.d))}
        rec.steps.append({"optimizer": which, "changed": changed, "before": state["probe"], "after": probe()})

    rec.handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    return rec


def _train(tmp_path: Path, name: str, *sets: str, resume: str | None = None):
    """Run the real training loop (dsgan_cli.train.train) on tiny 16/8 px data."""
    from dsgan_cli.train import train

    data = tmp_path / "data"
    if not data.exists():
        write_images(data / "hr", 6, 16, seed=0)
        write_images(data / "lr", 6, 8, seed=1, noise=12)
    base = ["data.hr_size=16", "data.lr_size=8", "train.batch_size=2", "data.num_workers=0", "loss.w_perceptual=0",
            "train.sample_every=100", f"data.hr_dir={json.dumps(str(data / 'hr'))}",
            f"data.lr_dir={json.dumps(str(data / 'lr'))}", f"train.output_dir={json.dumps(str(tmp_path / name))}"]
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
        f"generator tensors did not move in training steps with only the GAN term, e.g. {unchanged[:3]})")


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
        f"optimiser steps ran as {[s['optimizer'] for s in rec.steps]}: each training step must be D step, then G step")
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
            f"{a['real'] - a['fake']:.4f}: D is not trained towards real -> 1, fake -> 0")


def test_generator_step_makes_d_call_its_output_more_real(instrumented_gan_only_run):
    rec, _ = instrumented_gan_only_run
    for s in (s for s in rec.steps if s["optimizer"] == "G"):
        b, a = s["before"]["g_bce"], s["after"]["g_bce"]
        assert a < b, (f"after the G step -log D(G(Xb)) went from {b:.5f} to {a:.5f}: "
                       "G is not trained to make D call its output real")


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
        "the resumed run drew the first batch of the run again: the data stream restarts instead of continuing")
    assert torch.equal(hr, straight_batches[2][0]) and torch.equal(lr, straight_batches[2][1]), (
        "the resumed run's first batch is not the batch an uninterrupted run draws at that step: the data stream does not continue")

    for index, net in ((0, "G"), (1, "D")):
        a, b = _optimizer_state(straight.checkpoint_dir, index), _optimizer_state(resumed.checkpoint_dir, index)
        assert a.keys() == b.keys() and a, f"{net}'s optimiser state is missing from the checkpoint"
        for pid in a:
            assert float(b[pid]["step"]) == float(a[pid]["step"]) == 3, (
                f"{net}'s Adam step count is {float(b[pid]['step'])} after resuming to step 3: the optimiser was restarted")
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(a[pid][moment], b[pid][moment], rtol=1e-5, atol=1e-9), (
                    f"{net}'s Adam {moment} after resume differs from an uninterrupted run: "
                    "resume did not restore the optimiser moments")


# ----------------------------------------------------------------------------- degrade is G(bicubic(x))


def test_degrade_output_is_generator_of_bicubic_downscale(tmp_path):
    """Batched, tiled and odd-size inputs through the real CLI, against G rebuilt here from the safetensors file."""
    from dsgan_cli.checkpoint import save_generator

    torch.manual_seed(5)
    g = Generator(n_res_blocks=2, channels=16)
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
    sizes = {"a0": (16, 16), "a1": (16, 16), "a2": (16, 16), "a3": (16, 16), "odd": (21, 17),
             "big": (60, 44), "big_odd": (51, 37)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inp / f"{name}.png")
    res = run_cli("degrade", inp, tmp_path / "out", "--checkpoint", ckpt, "--tile", "12", "--batch-size", "3",
                  "--no-progress", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["converted"] == len(sizes)

    ref = Generator(n_res_blocks=2, channels=16)
    ref.load_state_dict(load_file(ckpt))
    ref.eval()
    for name, (h, w) in sizes.items():
        x = torch.from_numpy(np.array(Image.open(inp / f"{name}.png"))).permute(2, 0, 1)[None].float() / 255
        xb = F.interpolate(x, size=(round(h / 2), round(w / 2)), mode="bicubic", antialias=True,
                           align_corners=False).clamp(0, 1)
        with torch.no_grad():
            want = ref(xb)[0].permute(1, 2, 0).mul(255).round().numpy()
        got = np.asarray(Image.open(tmp_path / "out" / f"{name}.png")).astype(float)
        assert got.shape == want.shape, f"{name}: degrade wrote {got.shape}, G(bicubic(x)) is {want.shape}"
        diff = np.abs(got - want)
        # Equal up to float summation order: a value on a rounding boundary may move by one level.
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (
            f"{name} ({h}x{w}): degrade's output differs from G(bicubic(x)) by up to {diff.max():.0f} levels "
            f"on {(diff > 0).mean():.1%} of values: degrade does not compute G(bicubic(x))")


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
    ds = data_mod.MicroBatches(_labelled(4, 30), _labelled(4, 10), batch_size=4, seed=1, scale=scale, crop_size=crop)
    tops, lefts = set(), set()
    for m in range(6):
        hr, lr = ds[m]
        assert hr.shape[-2:] == (crop * scale, crop * scale) and lr.shape[-2:] == (crop, crop)
        for img in hr:
            top, left = int(img[1, 0, 0]), int(img[2, 0, 0])
            assert torch.equal(img[1, :, 0], torch.arange(top, top + crop * scale, dtype=torch.uint8)), "HR crop is not contiguous"
            assert top % scale == 0 and left % scale == 0, (
                f"HR crop at ({top}, {left}) is not on the {scale}-pixel grid: its Xb is not a crop of the full image's Xb")
            tops.add(top), lefts.add(left)
    assert len(tops) > 1 and len(lefts) > 1, "crops never move: random cropping is off"
