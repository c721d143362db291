"""model.grid_quality: a block codec's grid is read off the real LR where its quality cannot be, and G ends in JPEG
at the recipe's quality there."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, chw, run_cli
from PIL import Image
from safetensors import safe_open

from dsgan_cli.commands.demo_data import HR_SOURCES, LR_SOURCES
from dsgan_cli.data import known
from dsgan_cli.data.family import Step
from dsgan_cli.method.codec import GRID_MIN, read_grid, read_quality
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError


def _photo_patches(names, n: int, size: int, seed: int) -> list[np.ndarray]:
    return known.patches(known.pyramid(names, (320,)), n, size, np.random.default_rng(seed), flip=False)


def _as_tensor(arrs) -> torch.Tensor:
    return torch.stack([chw(np.ascontiguousarray(a)) for a in arrs])


def _codec(x: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format=fmt, quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


# Real LR: clean Xb of photographs (64 px), as a user's set of small faces would be.
PHOTOS = [known.xb_of(p, 2) for p in _photo_patches(LR_SOURCES, 96, 128, seed=1)]


def _set(make) -> torch.Tensor:
    rng = np.random.default_rng(7)
    return _as_tensor([np.clip(np.rint(make(p.astype(np.float64), rng)), 0, 255).astype(np.uint8) for p in PHOTOS])


def _webp(quality: int) -> torch.Tensor:
    return _set(lambda x, rng: _codec(x.astype(np.uint8), "WEBP", quality))


@pytest.mark.parametrize("quality", [30, 50, 70])
def test_webp_shows_a_grid_and_no_jpeg_quality(quality):
    lr = _webp(quality)
    grid = read_grid(lr)
    assert grid.period in (4, 8) and min(grid.excess) >= GRID_MIN, grid.describe()
    assert read_quality(lr).quality == 0, "WebP has no JPEG comb: the grid is what tells it"


def test_the_grid_fades_as_the_quality_rises():
    """Finer quantiser steps leave smaller steps at the block edges: the excess falls with the quality, and at
    q95 no grid is read."""
    excess = [min(read_grid(_webp(q)).excess) for q in (30, 50, 70, 95)]
    assert excess == sorted(excess, reverse=True), excess
    assert read_grid(_webp(95)).period == 0


def test_a_jpeg_under_later_noise_shows_its_8_px_grid_though_its_quality_is_lost():
    """JPEG q40, then strong noise on top: the coefficients leave the comb, the block edges stay."""
    lr = _set(lambda x, rng: _codec(x.astype(np.uint8), "JPEG", 40) + rng.normal(0, 8, x.shape))
    assert read_quality(lr).quality == 0
    grid = read_grid(lr)
    assert grid.period == 8, grid.describe()


@pytest.mark.parametrize(
    "name, make",
    [
        ("clean", lambda x, rng: x),
        ("blur", lambda x, rng: known.degrade(x.astype(np.uint8), rng, blur=1.2)),
        ("noise", lambda x, rng: x + rng.normal(0, 5, x.shape)),
        # The family's resampling: nearest by 1.27 and back puts a period in every image at the same place.
        ("resample", lambda x, rng: Step("resize", {"factor": 1.27, "down": "nearest", "up": "bicubic"}).apply(x, rng)),
        ("shifted webp", lambda x, rng: np.pad(_codec(x.astype(np.uint8), "WEBP", 30), ((2, 0), (2, 0), (0, 0)), mode="edge")[:-2, :-2]),
    ],
)
def test_photos_without_a_codec_grid_from_the_corner_show_none(name, make):
    """No codec, a resampling's period, and a codec grid that does not start at the image's corner (the crop
    moved it: G's JPEG stage would put its blocks elsewhere) read no grid."""
    grid = read_grid(_set(make))
    assert grid.period == 0, (name, grid.describe())


def test_images_too_small_for_two_periods_read_none():
    tiny = _as_tensor([np.asarray(_codec(p[:12, :12].copy(), "WEBP", 30)) for p in PHOTOS[:8]])
    assert read_grid(tiny).period == 0
    assert read_grid(tiny[:0]).period == 0


def test_the_recipe_refuses_a_grid_quality_without_the_read_quality():
    with pytest.raises(DsganError, match="model.grid_quality needs model.jpeg_quality = -1"):
        load_recipe(str(TINY_RECIPE), ["model.grid_quality=50"])


def _write(folder, arrs):
    folder.mkdir()
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(folder / f"img_{i}.png")


def _file_quality(run) -> tuple[str, dict]:
    with safe_open(run / "generator.safetensors", "pt") as f:
        return f.metadata()["jpeg_quality"], json.loads(f.metadata()["recipe"])["model"]


@pytest.mark.slow
def test_training_on_webp_real_lr_ends_g_in_jpeg_at_the_grid_quality(tmp_path):
    """A real CLI run: WebP real LR read no JPEG quality but a grid, and G's file carries the recipe's grid quality;
    without the option the stage stays off; JPEG real LR keep the quality read off them."""
    _write(tmp_path / "hr", _photo_patches(HR_SOURCES, 8, 128, seed=2))
    _write(tmp_path / "webp", [_codec(p, "WEBP", 40) for p in PHOTOS[:8]])
    _write(tmp_path / "jpeg", [_codec(p, "JPEG", 40) for p in PHOTOS[:8]])
    base = ["train", str(TINY_RECIPE), "--set", "data.hr_size=128", "--set", "data.lr_size=64", "--set", "model.jpeg_quality=-1"]
    base += ["--set", f"data.hr_dir='{tmp_path / 'hr'}'", "--set", "train.iterations=2"]

    def train(lr: str, out: str, *extra: str):
        r = run_cli(*base, "--set", f"data.lr_dir='{tmp_path / lr}'", "--set", f"train.output_dir='{tmp_path / out}'", *extra)
        assert r.returncode == 0, r.stderr
        return r.stderr

    said = train("webp", "grid", "--set", "model.grid_quality=50")
    assert "block grid" in said and "G ends in JPEG at q50, standing in for that codec" in said, said
    quality, model = _file_quality(tmp_path / "grid")
    assert quality == "50" and model["grid_quality"] == 50 and model["jpeg_quality"] == -1

    said = train("webp", "off")
    assert "block grid" not in said and "G's JPEG stage is off" in said, said
    assert _file_quality(tmp_path / "off")[0] == "0"

    said = train("jpeg", "read", "--set", "model.grid_quality=50")
    assert "JPEG quality 40" in said and "block grid" not in said, said
    assert _file_quality(tmp_path / "read")[0] == "40"
