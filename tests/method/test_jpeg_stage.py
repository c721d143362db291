"""G's JPEG stage (model.jpeg_quality): the codec, the quality read off real photos, tiles, files, training."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, chw, libjpeg, run_cli, synthetic_face_like, write_images
from PIL import Image
from safetensors import safe_open

from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.engines.generate import generate_tiled
from dsgan_cli.method.codec import MCU, block_phase, estimate_quality, image_quality, jpeg, rgb_to_ycbcr, tables
from dsgan_cli.method.models import Generator, GeneratorConfig


def _photo(size: int, seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = synthetic_face_like(size, seed).astype(np.float64) + rng.normal(0, noise, (size, size, 3)) * bool(noise)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.mark.parametrize("quality", [30, 80])
def test_the_codec_is_much_closer_to_libjpegs_output_than_its_input_is(quality):
    arr = _photo(64, 1, noise=4)
    ref = libjpeg(arr, quality)
    ours = (jpeg(chw(arr)[None].float() / 255, quality)[0].permute(1, 2, 0).numpy() * 255).round()
    assert _psnr(ours, ref) > max(35.0, _psnr(arr, ref) + 5), (
        f"q{quality}: codec output {_psnr(ours, ref):.1f} dB from libjpeg's, its input {_psnr(arr, ref):.1f} dB"
    )


def test_the_tables_are_libjpegs_at_every_quality():
    arr = _photo(16, 0)
    for quality in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=quality)
        written = Image.open(buf).quantization  # {table id: 64 steps, row by row}
        luma, chroma = tables(quality)
        assert luma.flatten().int().tolist() == list(written[0]), f"luma table at q{quality}"
        assert chroma.flatten().int().tolist() == list(written[1]), f"chroma table at q{quality}"


@pytest.mark.parametrize("quality", [30, 60, 80, 95])
def test_the_quality_is_read_off_decoded_jpegs(quality):
    images = [libjpeg(_photo(64, s, noise=6), quality) for s in range(4)]
    assert [image_quality(chw(a)) for a in images] == [quality] * 4
    assert estimate_quality(torch.stack([chw(a) for a in images])) == (quality, 4)


def test_the_quality_is_read_off_a_crop_whose_blocks_do_not_start_at_its_corner():
    arr = libjpeg(_photo(80, 3, noise=6), 50)[3:67, 5:69]
    y = rgb_to_ycbcr(chw(arr)[None].double())[0, 0]
    assert block_phase(y) == ((8 - 3) % 8, (8 - 5) % 8)
    assert image_quality(chw(arr)) == 50


def test_images_that_were_not_saved_as_jpeg_show_no_quality():
    plain = [_photo(64, s) for s in range(3)] + [_photo(64, s, noise=8) for s in range(3, 6)]
    assert [image_quality(chw(a)) for a in plain] == [0] * 6
    # A JPEG shrunk after decoding no longer has blocks on an 8-px grid.
    shrunk = np.asarray(Image.fromarray(libjpeg(_photo(96, 7, noise=6), 30)).resize((64, 64), Image.BICUBIC))
    assert image_quality(chw(shrunk)) == 0
    mixed = torch.stack([chw(a) for a in plain[:3]] + [chw(libjpeg(_photo(64, 9), 40))])
    assert estimate_quality(mixed) == (0, 4), "one JPEG in four must not switch the stage on"


def _with_background(arr: np.ndarray, share: float, colour: tuple[int, int, int]) -> np.ndarray:
    out = arr.copy()
    out[: int(len(out) * share)] = colour
    return out


@pytest.mark.parametrize("colour", [(255, 255, 255), (230, 230, 230), (200, 220, 240), (0, 0, 0)])
def test_flat_and_clipped_backgrounds_neither_fake_a_quality_nor_hide_one(colour):
    """Blocks of one flat colour (or clipped at 0/255, as ID photos' white backgrounds are) have the same large
    DC everywhere, which lands on a coarse quality's steps by chance."""
    photos = [_with_background(_photo(64, s, noise=3), 0.6, colour) for s in range(4)]
    assert estimate_quality(torch.stack([chw(a) for a in photos]))[0] == 0
    assert estimate_quality(torch.stack([chw(libjpeg(a, 30)) for a in photos]))[0] == 30


def _jpeg_generator(quality: int = 30) -> Generator:
    torch.manual_seed(5)
    g = Generator(
        GeneratorConfig(n_res_blocks=2, channels=8, padding="reflect", output="residual", output_noise=True, jpeg_quality=quality)
    ).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return g


def test_blocks_follow_the_origin_and_tiles_equal_the_whole_image():
    g = _jpeg_generator()
    x = chw(_photo(45, 2))[None].float() / 255
    z = g.make_noise(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = g(x, z)
        shifted = g(x, z, origin=(3, 0))
        period_shift = g(x, z, origin=(MCU, 2 * MCU))
    assert (whole - shifted).abs().max() > 1e-3, "the blocks do not move with the origin"
    assert torch.equal(whole, period_shift), "an origin shifted by whole 16-px units must change nothing"
    for tile in (6, 9, 40):
        tiled = generate_tiled(g, x, tile, torch.device("cpu"), noise=z)
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0), (
            f"tile {tile}: tiled G differs from the whole image by {(tiled - whole).abs().max():.3g}"
        )


def test_training_crops_get_blocks_at_random_phases():
    g = _jpeg_generator().train()
    x = torch.full((1, 3, 32, 32), 0.5) + torch.linspace(0, 0.3, 32).view(1, 1, 1, 32)
    phases = set()
    torch.manual_seed(0)
    for _ in range(12):
        with torch.no_grad():
            y = g(x, torch.zeros(1, 3, 32, 32))
        steps = y[0, :, 0].diff(dim=-1).abs().sum(0)  # along a row: the block edges carry the steps
        phases.add(int(steps.argmax()) % 8)
    assert len(phases) >= 3, f"training crops always get their blocks at phase {phases}: D would learn where crops start"


def test_an_origin_means_no_random_phase_and_no_draw_from_the_global_rng():
    """Sample grids call G (in training mode) with an origin: a checkpoint saved after them must hold the RNG
    state a straight run would have."""
    g = _jpeg_generator().train()
    x = torch.rand(1, 3, 32, 32)
    z = torch.zeros(1, 3, 32, 32)
    state = torch.get_rng_state()
    with torch.no_grad():
        a, b = g(x, z, origin=(0, 0)), g(x, z, origin=(0, 0))
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(a, b)
    with torch.no_grad():
        g(x, z)
    assert not torch.equal(torch.get_rng_state(), state), "without an origin a training crop draws its phase"


def test_whole_images_through_a_jpeg_stage_train_on_the_grid():
    """Real LR saved as JPEG have their blocks at the image's corner; uncropped training images must too."""
    from types import SimpleNamespace

    from dsgan_cli.engines.train import training_batches
    from dsgan_cli.method.recipe import load_recipe

    images = SimpleNamespace(images=torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    small = SimpleNamespace(images=torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    acc = SimpleNamespace(process_index=0, num_processes=1, device=torch.device("cpu"))
    whole = load_recipe(str(TINY_RECIPE), ["data.crop_size=0"])
    crops = load_recipe(str(TINY_RECIPE), ["data.crop_size=8"])
    assert training_batches(whole, images, small, acc, 0, jpeg_quality=30)[1] == (0, 0)
    assert training_batches(whole, images, small, acc, 0, jpeg_quality=0)[1] is None
    assert training_batches(crops, images, small, acc, 0, jpeg_quality=30)[1] is None, "crops: a random phase"


@pytest.mark.slow
def test_the_generator_file_keeps_the_quality_and_refuses_one_out_of_range(tmp_path):
    g = _jpeg_generator(quality=45)
    save_generator(g, tmp_path / "g.safetensors", step=1, scale=2)
    h, _ = load_generator(tmp_path / "g.safetensors")
    assert h.jpeg_quality == 45 and h.arch() == g.arch()
    x = torch.rand(1, 3, 20, 20)
    z = g.make_noise(x, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(h(x, z, origin=(1, 2)), g(x, z, origin=(1, 2)))

    from safetensors.torch import load_file, save_file

    with safe_open(tmp_path / "g.safetensors", "pt") as f:
        meta = dict(f.metadata())
    config = {**json.loads(meta["generator_config"]), "jpeg_quality": 101}
    bad = {**meta, "jpeg_quality": "101", "generator_config": json.dumps(config)}
    save_file(load_file(tmp_path / "g.safetensors"), tmp_path / "bad.safetensors", metadata=bad)
    r = run_cli("degrade", str(tmp_path), str(tmp_path / "out"), "--checkpoint", str(tmp_path / "bad.safetensors"))
    assert r.returncode != 0 and "bad.safetensors" in r.stderr and "jpeg_quality" in r.stderr


@pytest.mark.slow
def test_training_reads_the_quality_off_the_real_lr(tmp_path):
    write_images(tmp_path / "hr", 4, 32, seed=1)
    lr = tmp_path / "lr"
    lr.mkdir()
    for i in range(4):
        Image.fromarray(libjpeg(_photo(16, 20 + i, noise=6), 40)).save(lr / f"lr_{i}.png")
    sets = ["--set", f"data.hr_dir='{tmp_path / 'hr'}'", "--set", f"data.lr_dir='{lr}'", "--set", "model.jpeg_quality=-1"]
    r = run_cli("train", str(TINY_RECIPE), *sets, "--set", f"train.output_dir='{tmp_path / 'run'}'")
    assert r.returncode == 0, r.stderr
    assert "JPEG quality 40, read off 4 images" in r.stderr
    with safe_open(tmp_path / "run" / "generator.safetensors", "pt") as f:
        assert f.metadata()["jpeg_quality"] == "40"
        assert json.loads(f.metadata()["recipe"])["model"]["jpeg_quality"] == -1

    write_images(tmp_path / "lr_png", 4, 16, seed=2, noise=8)
    sets[3] = f"data.lr_dir='{tmp_path / 'lr_png'}'"
    r = run_cli("train", str(TINY_RECIPE), *sets, "--set", f"train.output_dir='{tmp_path / 'run2'}'")
    assert r.returncode == 0, r.stderr
    assert "no JPEG quality read off 4 images" in r.stderr and "sigma" in r.stderr
    with safe_open(tmp_path / "run2" / "generator.safetensors", "pt") as f:
        assert f.metadata()["jpeg_quality"] == "0"
