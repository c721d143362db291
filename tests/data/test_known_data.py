"""dsgan_cli.data.known: the photographs, patches, Xb and true degradations of the demo and the benchmarks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from dsgan_cli.data import known
from dsgan_cli.method.models import downscale
from dsgan_cli.plumbing.errors import DsganError

skdata = pytest.importorskip("skimage.data")


def positions(patch: np.ndarray, img: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``patch`` sits in ``img`` exactly."""
    s = patch.shape[0]
    windows = sliding_window_view(img, (s, s, 3))[:, :, 0]  # (H-s+1, W-s+1, s, s, 3)
    return [tuple(map(int, p)) for p in np.argwhere(np.all(windows == patch, axis=(2, 3, 4)))]


def smooth_image(size: int = 32) -> np.ndarray:
    """A smooth uint8 RGB ramp (no high frequencies, nothing clipped)."""
    ramp = np.linspace(60, 190, size)
    return np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).round().astype(np.uint8)


# ----------------------------------------------------------------------------- photographs


def test_photo_is_uint8_rgb_and_a_grey_photo_gets_three_equal_channels():
    grey = known.photo("camera")
    assert grey.dtype == np.uint8 and grey.shape == skdata.camera().shape + (3,)
    assert all(np.array_equal(grey[..., c], skdata.camera()) for c in range(3))
    colour = known.photo("astronaut")
    assert np.array_equal(colour, skdata.astronaut()[..., :3])
    left = known.photo("stereo_motorcycle")
    assert np.array_equal(left, skdata.stereo_motorcycle()[0])


def test_photo_without_scikit_image_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # makes `import skimage.data` fail
    with pytest.raises(DsganError, match=r"scikit-image.*pip install 'dsgan-cli\[demo\]'"):
        known.photo("astronaut")


def test_shrink_sets_the_short_side_keeps_the_aspect_and_never_enlarges():
    arr = known.photo("coffee")  # 400 x 600
    small = known.shrink(arr, 100)
    assert small.shape == (100, 150, 3) and small.dtype == np.uint8
    # Lanczos keeps the picture: the mean colour barely moves.
    assert np.abs(small.reshape(-1, 3).mean(0) - arr.reshape(-1, 3).mean(0)).max() < 2
    assert known.shrink(arr, 400) is arr and known.shrink(arr, 1000) is arr
    # Antialiased: a one-pixel checkerboard shrunk 4x is flat grey, not a sample of black or white pixels.
    checker = np.where((np.indices((64, 96)).sum(0) % 2)[..., None], 255, 0).repeat(3, axis=2).astype(np.uint8)
    grey = known.shrink(checker, 16).astype(np.float64)
    assert grey.shape == (16, 24, 3) and np.abs(grey[2:-2, 2:-2] - 127.5).max() < 8


def test_pyramid_holds_each_photo_at_each_short_side_photo_by_photo():
    images = known.pyramid(["coffee", "camera"], (120, 80))
    assert [min(i.shape[:2]) for i in images] == [120, 80, 120, 80]
    assert images[0].shape[:2] == (120, 180) and images[2].shape[:2] == (120, 120)
    assert np.array_equal(images[1], known.shrink(known.photo("coffee"), 80))


def test_split_columns_cuts_each_image_at_the_fraction():
    images = [np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3), np.zeros((7, 9, 3), np.uint8)]
    left, right = known.split_columns(images, 0.7)
    assert [a.shape[1] for a in left] == [14, 6] and [a.shape[1] for a in right] == [6, 3]
    for img, a, b in zip(images, left, right):
        assert np.array_equal(np.concatenate([a, b], axis=1), img)


# ----------------------------------------------------------------------------- patches


@pytest.mark.parametrize("flip", [False, True])
def test_patches_have_the_size_and_come_from_the_photos_in_turn(flip):
    images = known.pyramid(["astronaut", "coins"], (64,))
    out = known.patches(images, 8, 16, np.random.default_rng(3), flip=flip)
    assert len(out) == 8
    flipped = 0
    for i, p in enumerate(out):
        assert p.shape == (16, 16, 3) and p.dtype == np.uint8 and p.flags.c_contiguous
        src = images[i % 2]
        if positions(p, src):
            continue
        assert flip and positions(p[:, ::-1], src), f"patch {i} is not a crop of photo {i % 2}"
        flipped += 1
    assert flip or flipped == 0


def test_patches_draw_y_then_x_and_with_flip_one_more_draw_per_patch():
    """The draw order is what makes the same seed give the same data release after release."""
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = known.patches([img], 5, 8, np.random.default_rng(11), flip=False)
    rng = np.random.default_rng(11)
    for p in out:
        y, x = rng.integers(0, 33), rng.integers(0, 43)
        assert np.array_equal(p, img[y : y + 8, x : x + 8])
    with_flip = known.patches([img], 5, 8, np.random.default_rng(11), flip=True)
    rng = np.random.default_rng(11)
    for p in with_flip:
        y, x, mirror = rng.integers(0, 33), rng.integers(0, 43), rng.random() < 0.5
        crop = img[y : y + 8, x : x + 8]
        assert np.array_equal(p, crop[:, ::-1] if mirror else crop)


def test_patches_skip_regions_smaller_than_the_patch_and_refuse_when_none_is_big_enough():
    big, small = np.full((20, 20, 3), 7, np.uint8), np.full((10, 30, 3), 200, np.uint8)
    out = known.patches([small, big], 4, 12, np.random.default_rng(0), flip=True)
    assert all((p == 7).all() for p in out)
    with pytest.raises(DsganError, match="at least 40 pixels"):
        known.patches([small, big], 1, 40, np.random.default_rng(0), flip=False)


def test_same_seed_same_patches_other_seed_other_patches():
    images = known.pyramid(["brick", "chelsea"], (96,))
    a = known.patches(images, 6, 24, np.random.default_rng(5), flip=True)
    b = known.patches(images, 6, 24, np.random.default_rng(5), flip=True)
    c = known.patches(images, 6, 24, np.random.default_rng(6), flip=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# ----------------------------------------------------------------------------- Xb


@pytest.mark.parametrize("scale", [2, 3])
def test_xb_is_the_package_downscale_rounded(scale):
    hr = known.patches(known.pyramid(["astronaut"], (96,)), 1, 48, np.random.default_rng(0), flip=False)[0]
    before = hr.copy()
    xb = known.xb_of(hr, scale)
    assert xb.shape == (48 // scale, 48 // scale, 3) and xb.dtype == np.uint8
    t = torch.tensor(hr, dtype=torch.float32).permute(2, 0, 1)[None] / 255
    expected = (downscale(t, scale)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(xb, expected)
    assert not np.array_equal(xb, hr[::scale, ::scale])  # filtered, not subsampled
    assert np.array_equal(hr, before)


# ----------------------------------------------------------------------------- degradations


def test_no_stage_leaves_the_image_and_the_rng_alone():
    img, rng = smooth_image(), np.random.default_rng(4)
    assert np.array_equal(known.degrade(img, rng), img)
    assert rng.random() == np.random.default_rng(4).random()


def test_noise_only_has_the_requested_std_on_a_flat_image():
    flat = np.full((256, 256, 3), 128, np.uint8)
    out = known.degrade(flat, np.random.default_rng(0), noise=10.0)
    residual = out.astype(np.float64) - 128
    assert out.dtype == np.uint8 and out.shape == flat.shape
    assert abs(residual.std() - 10.0) < 0.15 and abs(residual.mean()) < 0.1
    # White noise: neighbours and colour channels are uncorrelated.
    assert abs(np.corrcoef(residual[:, 1:].ravel(), residual[:, :-1].ravel())[0, 1]) < 0.02
    assert abs(np.corrcoef(residual[..., 0].ravel(), residual[..., 1].ravel())[0, 1]) < 0.02


def test_blur_smooths_an_edge_and_draws_nothing():
    edge = np.zeros((16, 16, 3), np.uint8)
    edge[:, 8:] = 200
    rng = np.random.default_rng(1)
    out = known.degrade(edge, rng, blur=1.0)
    assert 0 < out[0, 7, 0] < 100 < out[0, 8, 0] < 200  # the step is spread over the neighbours
    assert np.array_equal(out[..., 0], out[..., 2])  # no mixing across channels
    assert rng.random() == np.random.default_rng(1).random()


def test_noise_comes_after_the_blur():
    """The residual of blur + noise against blur alone is the full noise, not a blurred (weaker) one."""
    img = smooth_image(128)
    both = known.degrade(img, np.random.default_rng(2), blur=1.0, noise=5.0).astype(np.float64)
    blurred = known.degrade(img, np.random.default_rng(2), blur=1.0).astype(np.float64)
    assert abs((both - blurred).std() - 5.0) < 0.2


def test_jpeg_quality_changes_the_output_and_jpeg_comes_last():
    img = smooth_image(64)
    noisy = known.degrade(img, np.random.default_rng(3), noise=12.0)
    low = known.degrade(img, np.random.default_rng(3), noise=12.0, jpeg=20)
    high = known.degrade(img, np.random.default_rng(3), noise=12.0, jpeg=90)
    assert not np.array_equal(low, high) and not np.array_equal(high, noisy)
    err = lambda a: float(np.mean((a.astype(np.float64) - noisy) ** 2))  # noqa: E731
    assert err(high) < err(low)
    # Low quality throws away the fine grain: closer to the clean image's smoothness.
    lap = lambda a: float(np.mean(np.diff(a.astype(np.float64), 2, axis=1) ** 2))  # noqa: E731
    assert lap(low) < 0.5 * lap(noisy)


def test_same_seed_same_degradation_other_seed_other():
    img = smooth_image()
    a = known.degrade(img, np.random.default_rng(8), noise=6.0, jpeg=80)
    assert np.array_equal(a, known.degrade(img, np.random.default_rng(8), noise=6.0, jpeg=80))
    assert not np.array_equal(a, known.degrade(img, np.random.default_rng(9), noise=6.0, jpeg=80))


# ----------------------------------------------------------------------------- writing


def test_save_pngs_writes_numbered_lossless_pngs(tmp_path):
    images = [np.random.default_rng(i).integers(0, 256, (12, 10, 3), dtype=np.uint8) for i in range(3)]
    known.save_pngs(tmp_path / "set", images, "lr")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["lr_0000.png", "lr_0001.png", "lr_0002.png"]
    for i, a in enumerate(images):
        with Image.open(tmp_path / "set" / f"lr_{i:04d}.png") as im:
            assert im.format == "PNG" and np.array_equal(np.asarray(im), a)
