"""model.grain_check: whether the real LR carry grain is read off them, and G adds none where they carry none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, chw, run_cli
from PIL import Image
from safetensors import safe_open

from dsgan_cli.commands.demo_data import HR_SOURCES, LR_SOURCES
from dsgan_cli.data import known
from dsgan_cli.method.grain import MAX_IMAGES, MIN_PATCHES, read_grain
from dsgan_cli.method.image_sampling import spread
from dsgan_cli.method.models import downscale
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError


def _photo_patches(names, n: int, size: int, seed: int) -> list[np.ndarray]:
    return known.patches(known.pyramid(names, (320,)), n, size, np.random.default_rng(seed), flip=False)


def _as_tensor(arrs) -> torch.Tensor:
    return torch.stack([chw(np.ascontiguousarray(a)) for a in arrs])


def _degraded(photos: list[np.ndarray], **how) -> np.ndarray:
    rng = np.random.default_rng(7)
    return np.stack([known.degrade(p, rng, **how) for p in photos])


# Clean HR patches of some photographs; the real LR are other photographs (their clean Xb, then degraded), as a
# user's two sets are.
HR_PATCHES = _photo_patches(HR_SOURCES, 96, 64, seed=0)
HR = _as_tensor(HR_PATCHES)
PHOTOS = [known.xb_of(p, 2) for p in _photo_patches(LR_SOURCES, 96, 64, seed=1)]


@pytest.mark.parametrize("sigma", [1.0, 3.0, 8.0])
def test_noisy_real_lr_carry_grain(sigma):
    reading = read_grain(HR, _as_tensor(_degraded(PHOTOS, noise=sigma)), 2)
    assert reading.carries and reading.real > 2 * reading.clean, reading


@pytest.mark.parametrize("how", [{"jpeg": 30}, {"jpeg": 45}, {"blur": 1.0}, {"blur": 1.0, "jpeg": 75}])
def test_compressed_or_blurred_real_lr_carry_none(how):
    """JPEG flattens flat regions, a blur smooths them: neither reads above the clean Xb."""
    reading = read_grain(HR, _as_tensor(_degraded(PHOTOS, **how)), 2)
    assert not reading.carries, reading


def test_the_reading_rises_with_the_grain_and_reads_about_its_level():
    """On a flat grey set, white noise of std s: the flattest tenth of 4 x 4 patches reads below s (the lowest
    patches of a chi distribution) but above half of it, and more noise always reads more."""
    grey = [np.full((32, 32, 3), 128, np.uint8)] * 48
    readings = [read_grain(HR, _as_tensor(_degraded(grey, noise=s)), 2).real for s in (2.0, 4.0, 8.0, 16.0)]
    assert readings == sorted(readings) and len(set(readings)) == 4, readings
    for s, got in zip((2.0, 4.0, 8.0, 16.0), readings, strict=True):
        assert 0.5 * s < got < s, (s, got)


def test_the_clean_side_is_the_hr_sets_xb_rounded_to_levels():
    """The real LR being exactly the HR set's own rounded Xb read the same as the clean side."""
    own = downscale(HR.float() / 255, 2).mul(255).round().byte()
    reading = read_grain(HR, own, 2)
    assert reading.real == pytest.approx(reading.clean, rel=1e-9) and not reading.carries


def test_an_even_spread_of_at_most_max_images():
    assert spread(10, MAX_IMAGES) == list(range(10))
    big = spread(5000, MAX_IMAGES)
    assert len(big) == MAX_IMAGES and big[0] == 0 and big[-1] == 4999
    gaps = np.diff(big)
    assert gaps.max() - gaps.min() <= 1


def test_without_grain_g_has_no_output_noise_and_no_level_term():
    from dsgan_cli.engines.train import build_networks

    r = load_recipe("idphoto", ["perceptual.weights=random", "model.noise_kernel=3"])
    fmts = dict.fromkeys("GDP", torch.contiguous_format)
    G, _, loss, _, _ = build_networks(r, torch.device("cpu"), fmts, grain=True)
    assert G.config.output_noise and G.config.noise_mix and G.config.noise_kernel == 3 and loss.w_noise_level == 2.0
    G, _, loss, _, _ = build_networks(r, torch.device("cpu"), fmts, grain=False)
    assert not G.config.output_noise and not G.config.noise_mix and G.config.noise_kernel == 0 and loss.w_noise_level == 0.0
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(G(x), G(x)), "a G without grain is deterministic"


def test_grain_check_needs_output_noise():
    with pytest.raises(DsganError, match="model.grain_check needs model.output_noise"):
        load_recipe("idphoto", ["model.output_noise=false", "model.noise_mix=false", "model.grain_check=true"])


def _write(folder, arrs):
    folder.mkdir()
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(folder / f"img_{i}.png")


def _train_args(tmp_path, lr: str, out: str, *more: str) -> list[str]:
    sizes = ["--set", "data.hr_size=128", "--set", "data.lr_size=64"]
    dirs = [
        "--set",
        f"data.hr_dir='{tmp_path / 'hr'}'",
        "--set",
        f"data.lr_dir='{tmp_path / lr}'",
        "--set",
        f"train.output_dir='{tmp_path / out}'",
    ]
    return ["train", str(TINY_RECIPE), *sizes, *dirs, "--set", "model.output_noise=true", *more]


def _output_noise(run) -> bool:
    with safe_open(run / "generator.safetensors", "pt") as f:
        return json.loads(f.metadata()["generator_config"])["output_noise"]


@pytest.fixture
def photo_sets(tmp_path):
    """12 HR photo patches of 128 px; real LR of 64 px from other photos, as JPEG q40 and with noise."""
    _write(tmp_path / "hr", _photo_patches(HR_SOURCES, 12, 128, seed=2))
    photos = [known.xb_of(p, 2) for p in _photo_patches(LR_SOURCES, 12, 128, seed=3)]
    _write(tmp_path / "lr_jpeg", _degraded(photos, jpeg=40))
    _write(tmp_path / "lr_noisy", _degraded(photos, noise=6.0))
    return tmp_path


def test_training_reads_the_grain_off_the_real_lr(photo_sets):
    """A run on grain-free real LR exports a G without output noise and says why; on noisy ones, with; without
    the check, G keeps its noise on grain-free real LR."""
    for name, grain in (("lr_jpeg", False), ("lr_noisy", True)):
        r = run_cli(*_train_args(photo_sets, name, f"run_{name}", "--set", "model.grain_check=true"))
        assert r.returncode == 0, r.stderr
        said = "real LR: grain (" if grain else "real LR: no grain ("
        assert said in r.stderr and "12 real LR and 12 HR images" in r.stderr, r.stderr
        assert _output_noise(photo_sets / f"run_{name}") is grain
        with safe_open(photo_sets / f"run_{name}" / "generator.safetensors", "pt") as f:
            assert json.loads(f.metadata()["recipe"])["model"]["grain_check"] is True
    r = run_cli(*_train_args(photo_sets, "lr_jpeg", "run_unchecked"))
    assert r.returncode == 0, r.stderr
    assert "real LR: " not in r.stderr.replace("real LR: JPEG", "") and _output_noise(photo_sets / "run_unchecked") is True


def test_a_resume_keeps_the_checkpoints_decision(photo_sets):
    """A checkpoint whose G has grain (made without the check, as by a version before it) keeps it when the
    recipe now checks: the check does not build another G under the checkpoint; a fresh start reads the sets."""
    from types import SimpleNamespace

    from dsgan_cli.engines.train import grain_for

    assert run_cli(*_train_args(photo_sets, "lr_jpeg", "run", "--set", "train.iterations=2")).returncode == 0
    ckpt = next((photo_sets / "run" / "checkpoints").iterdir())
    r = load_recipe(str(TINY_RECIPE), ["model.output_noise=true", "model.grain_check=true", "data.hr_size=128", "data.lr_size=64"])

    def images(folder):
        return SimpleNamespace(images=_as_tensor([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]))

    hr, lr = images(photo_sets / "hr"), images(photo_sets / "lr_jpeg")
    assert grain_for(r, hr, lr, say=False) is False
    assert grain_for(r, hr, lr, say=False, resume_from=ckpt) is True


def _white_background(arrs, share: float = 0.4) -> np.ndarray:
    """Each image with its left ``share`` blown out to white, as an ID photo's background often is."""
    out = np.array(arrs, copy=True)
    out[:, :, : round(out.shape[2] * share)] = 255
    return out


def test_a_blown_out_background_neither_hides_grain_nor_fakes_it():
    """Clipped patches are flat whatever the camera added: left out on both sides, they change no decision."""
    noisy = _white_background(_degraded(PHOTOS, noise=2.0))
    assert read_grain(HR, _as_tensor(noisy), 2).carries
    white_hr = _as_tensor(_white_background(np.stack(HR_PATCHES)))
    reading = read_grain(white_hr, _as_tensor(_degraded(PHOTOS, jpeg=30)), 2)
    assert not reading.carries and reading.clean > 0.1, reading


def test_sets_with_nothing_but_clipped_patches_keep_the_grain_and_say_so():
    white = torch.full((4, 3, 16, 16), 255, dtype=torch.uint8)
    reading = read_grain(HR, white, 2)
    assert reading.carries and "grain not read" in reading.describe()


def test_too_few_patches_keep_the_grain_and_say_so():
    """A handful of small images is no reading (JPEG-only sets then read as grain by chance): G keeps its grain."""
    few = _as_tensor(_degraded(PHOTOS[:8], jpeg=40))[..., :16, :16]
    assert few.shape[0] * 9 < MIN_PATCHES
    reading = read_grain(HR, few, 2)
    assert reading.carries and "grain not read (the real LR images have fewer than" in reading.describe()
    tiny = read_grain(HR[:, :, :8, :8], few[:, :, :4, :4], 2)  # 4-px LR: no patch at all, and no error
    assert tiny.carries and tiny.real_patches == 0 and "real LR and HR images" in tiny.describe()
