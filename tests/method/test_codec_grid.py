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
from dsgan_cli.method.codec import GRID_IMAGES, GRID_MIN, edge_excess, read_grid, read_quality, step_profiles
from dsgan_cli.method.recipe import load_recipe


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
    """Finer quantiser steps leave smaller steps at the block edges: the excess falls with the quality."""
    readings = [read_grid(_webp(q)) for q in (30, 50, 70)]
    assert all(g.period == 4 for g in readings), [g.describe() for g in readings]
    excess = [min(g.excess) for g in readings]
    assert excess == sorted(excess, reverse=True), excess


def test_a_jpeg_under_later_noise_shows_its_8_px_grid_though_its_quality_is_lost():
    """JPEG q40, then strong noise on top: the coefficients leave the comb, the block edges stay."""
    lr = _set(lambda x, rng: _codec(x.astype(np.uint8), "JPEG", 40) + rng.normal(0, 8, x.shape))
    assert read_quality(lr).quality == 0
    grid = read_grid(lr)
    assert grid.period == 8, grid.describe()


def _shifted(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved down by ``dy`` and right by ``dx`` px, its edge repeated: what a crop does to a codec's grid."""
    return np.pad(x, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: x.shape[0], : x.shape[1]]


def _doubled(x: np.ndarray) -> np.ndarray:
    """``x`` at half size, then doubled by nearest neighbour."""
    half = Image.fromarray(x.astype(np.uint8)).resize((x.shape[1] // 2, x.shape[0] // 2), Image.Resampling.LANCZOS)
    return np.asarray(half).repeat(2, 0).repeat(2, 1).astype(np.float64)


@pytest.mark.parametrize(
    "name, make",
    [
        ("clean", lambda x, rng: x),
        ("blur", lambda x, rng: known.degrade(x.astype(np.uint8), rng, blur=1.2)),
        ("noise", lambda x, rng: x + rng.normal(0, 5, x.shape)),
        # The family's resampling: nearest by 1.27 and back puts a period in every image at the same place.
        ("resample", lambda x, rng: Step("resize", {"factor": 1.27, "down": "nearest", "up": "bicubic"}).apply(x, rng)),
        # Pixel doubling steps at every odd offset: two offsets stand out, neither above the other.
        ("doubled", lambda x, rng: _doubled(x) + rng.normal(0, 2, x.shape)),
        ("shifted webp", lambda x, rng: _shifted(_codec(x.astype(np.uint8), "WEBP", 30), 2, 2)),
        # A grid in one direction only: the rows' edges moved off the corner, the columns' kept.
        ("webp shifted down", lambda x, rng: _shifted(_codec(x.astype(np.uint8), "WEBP", 30), 2, 0)),
    ],
)
def test_photos_without_a_codec_grid_from_the_corner_in_both_directions_show_none(name, make):
    """No codec, a resampling's period, pixel doubling, and a codec grid that does not start at the image's corner in
    both directions (a crop moved it: G's JPEG stage would put its blocks elsewhere) read no grid: at the 8-px block
    edge both directions stay under the threshold, at the 4-px edge at least one."""
    lr = _set(make)
    grid = read_grid(lr)
    assert grid.period == 0 and min(grid.excess) < GRID_MIN, (name, grid.describe())
    cols, rows = step_profiles(lr, list(range(len(lr))))
    assert min(edge_excess(cols, 4), edge_excess(rows, 4)) < GRID_MIN, name


def test_too_few_or_too_small_images_read_none():
    """Under GRID_IMAGES images the highest offset lands on a block edge by chance; images holding fewer than two
    periods inside their borders give nothing to fold."""
    webp = _webp(30)
    assert read_grid(webp[:GRID_IMAGES]).period == 4
    few = read_grid(webp[: GRID_IMAGES - 1])
    assert few.period == 0 and f"it needs {GRID_IMAGES}" in few.describe()
    tiny = _as_tensor([np.asarray(_codec(p[:12, :12].copy(), "WEBP", 30)) for p in PHOTOS])
    assert read_grid(tiny).period == 0
    assert read_grid(webp[:0]).period == 0


def test_the_quality_g_ends_in_on_every_path():
    """A given quality is used as it is; a quality read wins over a grid; a grid without a quality gives
    model.grid_quality; no grid, or the option off, gives none."""
    from types import SimpleNamespace

    from dsgan_cli.engines.train import jpeg_quality_for

    def quality(images, *sets):
        return jpeg_quality_for(load_recipe(str(TINY_RECIPE), list(sets)), SimpleNamespace(images=images), say=False)

    webp, jpeg, clean = _webp(40), _set(lambda x, rng: _codec(x.astype(np.uint8), "JPEG", 40)), _set(lambda x, rng: x)
    read = ("model.jpeg_quality=-1", "model.grid_quality=50")
    assert quality(webp, *read) == 50
    assert quality(jpeg, *read) == 40
    assert quality(clean, *read) == 0
    assert quality(webp, "model.jpeg_quality=-1") == 0
    assert quality(webp, "model.jpeg_quality=70", "model.grid_quality=50") == 70
    assert quality(webp, "model.jpeg_quality=0", "model.grid_quality=50") == 0


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
    _write(tmp_path / "webp", [_codec(p, "WEBP", 40) for p in PHOTOS[:GRID_IMAGES]])
    _write(tmp_path / "jpeg", [_codec(p, "JPEG", 40) for p in PHOTOS[:GRID_IMAGES]])
    base = ["train", str(TINY_RECIPE), "--set", "data.hr_size=128", "--set", "data.lr_size=64", "--set", "model.jpeg_quality=-1"]
    base += ["--set", f"data.hr_dir='{tmp_path / 'hr'}'", "--set", "train.iterations=2"]

    def train(lr: str, out: str, *extra: str):
        r = run_cli(*base, "--set", f"data.lr_dir='{tmp_path / lr}'", "--set", f"train.output_dir='{tmp_path / out}'", *extra)
        assert r.returncode == 0, r.stderr
        return r.stderr

    said = train("webp", "grid", "--set", "model.grid_quality=50")
    assert "block edges every 4 px" in said and "G ends in JPEG at q50, standing in for that codec" in said, said
    quality, model = _file_quality(tmp_path / "grid")
    assert quality == "50" and model["grid_quality"] == 50 and model["jpeg_quality"] == -1

    said = train("webp", "off")
    assert "block edges" not in said and "G's JPEG stage is off" in said, said
    assert _file_quality(tmp_path / "off")[0] == "0"

    said = train("jpeg", "read", "--set", "model.grid_quality=50")
    assert "JPEG quality 40" in said and "block edges" not in said, said
    assert _file_quality(tmp_path / "read")[0] == "40"
