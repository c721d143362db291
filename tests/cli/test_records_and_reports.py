"""What a command writes for another program to read says what is true: names in line-based lists, the sizes and
verdict of an eval report, the recipe a resume is checked against, the JPEG quality read off real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, chw, libjpeg, run_cli, small_generator_file, synthetic_face_like, write_images
from PIL import Image

from dsgan_cli.metrics import fid


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return small_generator_file(tmp_path_factory.mktemp("g") / "g.safetensors", seed=1)


def test_pairs_names_with_spaces_or_newlines_are_mapped_for_meta_info(tmp_path, ckpt):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 1, 16)
    arr = synthetic_face_like(16, 7)
    Image.fromarray(arr).save(inp / "my photo.png")
    Image.fromarray(arr).save(inp / "a\nb.png")
    Image.fromarray(arr).save(inp / "my_photo.png")  # the mapped name of "my photo.png": a clash
    res = run_cli("pairs", inp, out, "-c", ckpt, "--json")
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["pairs"] == 3
    assert [f["path"] for f in summary["failed"]] == [str(inp / "my_photo.png")]
    assert "already the output of" in summary["failed"][0]["reason"]
    lines = (out / "meta_info.txt").read_text().splitlines()
    assert len(lines) == 3
    names = [ln.strip().split(" ")[0] for ln in lines]  # as BasicSR reads it
    assert sorted(names) == ["a_b.png", "img_000.png", "my_photo.png"]
    for name in names:
        assert (out / "hr" / name).is_file() and (out / "lr" / name).is_file()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "inception-random.pth"
    torch.save(fid.random_state_dict(), path)
    return path


def test_eval_gives_no_verdict_when_a_set_is_smaller_than_the_real_half(tmp_path, weights_file):
    hr, fake, real = tmp_path / "hr", tmp_path / "fake", tmp_path / "real"
    write_images(hr, 2, 64, seed=4)
    write_images(fake, 12, 32, seed=6)
    write_images(real, 12, 32, seed=5, noise=20)
    res = run_cli(
        "eval",
        fake,
        real,
        "--reference",
        hr,
        "--json",
        tmp_path / "r.json",
        "--inception-weights",
        weights_file,
        "--batch-size",
        "4",
        "--cache-dir",
        tmp_path / "c",
    )
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    eq = data["equal_sizes"]
    assert data["closes"] is None and eq["closes"] is None and eq["sizes"] is None
    assert "the reference Xb has 2 images, fewer than the 6" in eq["no_verdict"]
    assert "no verdict: the reference Xb has 2 images" in res.stdout and "closes" not in res.stdout
    assert data["reference_xb"]["sizes"] == [2, 12]


@pytest.mark.parametrize("option", ["--cache-dir", "--data-cache-dir"])
def test_eval_cache_option_naming_a_file_is_refused(tmp_path, option):
    write_images(tmp_path / "fake", 2, 16)
    write_images(tmp_path / "real", 2, 16, seed=1)
    afile = tmp_path / "cache.txt"
    afile.write_text("not a folder")
    res = run_cli("eval", tmp_path / "fake", tmp_path / "real", "--no-fid", option, afile)
    assert res.returncode == 2, res.stderr
    assert res.stderr == f"error: {afile}: exists and is a regular file; {option} names a folder for the cache\n"
    assert afile.read_text() == "not a folder"


def test_resume_into_another_folder_is_checked_against_the_checkpoints_recipe(tmp_path):
    write_images(tmp_path / "hr", 4, 32, seed=1)
    write_images(tmp_path / "lr", 4, 16, seed=2, noise=6)
    base = [
        "train",
        TINY_RECIPE,
        "--set",
        f"data.hr_dir='{tmp_path / 'hr'}'",
        "--set",
        f"data.lr_dir='{tmp_path / 'lr'}'",
        "--set",
        "train.iterations=2",
        "--set",
        "model.jpeg_quality=30",
    ]
    res = run_cli(*base, "--set", f"train.output_dir='{tmp_path / 'rA'}'")
    assert res.returncode == 0, res.stderr
    ckpt = tmp_path / "rA" / "checkpoints" / "step_00000002"
    res = run_cli(
        *base,
        "--set",
        "train.iterations=3",
        "--set",
        f"train.output_dir='{tmp_path / 'rB'}'",
        "--set",
        "model.jpeg_quality=90",
        "--set",
        "data.crop_size=8",
        "--resume",
        ckpt,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"error: {tmp_path / 'rB'}: cannot resume exactly") and res.stderr.count("\n") == 1
    assert "model.jpeg_quality 30 -> 90" in res.stderr and "data.crop_size" in res.stderr
    assert not (tmp_path / "rB" / "checkpoints").exists()


def _gradient(size: int, seed: int, radial: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if radial:
        cy, cx = rng.uniform(0, size, 2)
        r = np.hypot(xx - cx, yy - cy)
        planes = [r / r.max() * rng.uniform(100, 250) + rng.uniform(0, 5) for _ in range(3)]
    else:
        planes = [rng.uniform(20, 120) + rng.uniform(-1.5, 1.5) * xx + rng.uniform(-1.5, 1.5) * yy for _ in range(3)]
    return np.clip(np.stack(planes, -1).round(), 0, 255).astype(np.uint8)


def test_smooth_images_never_saved_as_jpeg_read_as_none_and_say_how_sure():
    from dsgan_cli.method.codec import read_quality

    cases = {
        "radial 256": [_gradient(256, 1, radial=True)],
        "linear 256": [_gradient(256, 2)],
        "linear 64 q95": [libjpeg(_gradient(64, s), 95) for s in range(16)],
        "radial 64 q95": [libjpeg(_gradient(64, s, radial=True), 95) for s in range(16)],
    }
    for name, images in cases.items():
        reading = read_quality(torch.stack([chw(a) for a in images]))
        assert reading.quality == 0, f"{name}: read as q{reading.quality} ({reading.describe()})"
        assert reading.describe().startswith("no JPEG quality read") and "sigma" in reading.describe()
    photos = [
        libjpeg(
            np.clip(synthetic_face_like(64, s) + np.random.default_rng(s).normal(0, 6, (64, 64, 3)), 0, 255).round().astype(np.uint8), 40
        )
        for s in range(4)
    ]
    reading = read_quality(torch.stack([chw(a) for a in photos]))
    assert reading.quality == 40 and reading.describe().startswith("JPEG quality 40, read off 4 images (")
