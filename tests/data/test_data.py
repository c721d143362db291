"""The training data stream: decoding, unpaired seeded sampling, rank partition, scale-aligned crops and flips.

Expected values come from the images written here (pixels that encode where they came from)
or from PIL, never from the sampling code itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dsgan_cli.data.sampling import Crops, MicroBatches, make_loader, stream_indices
from dsgan_cli.data.sets import check_data_dirs, load_image_set
from dsgan_cli.plumbing.errors import DsganError


def _labelled(n: int, size: int) -> torch.Tensor:
    """``n`` uint8 images whose pixels encode (image index, row, column), so any crop or flip can be located."""
    i = torch.arange(n)[:, None, None, None].expand(n, 1, size, size)
    y = torch.arange(size)[None, None, :, None].expand(n, 1, size, size)
    x = torch.arange(size)[None, None, None, :].expand(n, 1, size, size)
    return torch.cat([i, y, x], dim=1).to(torch.uint8)


# ----------------------------------------------------------------------------- seeded per-epoch shuffles


def test_every_epoch_is_a_fresh_permutation_and_any_window_is_the_same_stream():
    n = 7
    full = stream_indices(n, 0, 4 * n, seed=11, stream=1)
    epochs = [full[e * n : (e + 1) * n].tolist() for e in range(4)]
    for e, ids in enumerate(epochs):
        assert sorted(ids) == list(range(n)), f"epoch {e} shows {ids}: every image must be seen exactly once per epoch"
    assert len({tuple(ids) for ids in epochs}) > 1, "every epoch has the same order: the stream is not reshuffled per epoch"
    for start, count in ((3, 9), (n - 1, 2), (2 * n, n), (5, 1)):
        window = stream_indices(n, start, count, seed=11, stream=1)
        assert torch.equal(window, full[start : start + count]), (
            f"positions {start}..{start + count - 1} drawn alone differ from the same positions of the whole stream: "
            "resuming at a step would not continue the stream"
        )


def test_streams_and_seeds_give_independent_orders():
    n, count = 9, 27
    base = stream_indices(n, 0, count, seed=4, stream=1)
    for other in (stream_indices(n, 0, count, seed=4, stream=2), stream_indices(n, 0, count, seed=5, stream=1)):
        assert not torch.equal(base, other), "two streams (or two seeds) draw the same order: HR and LR would be paired"
    # seed and stream are not interchangeable: (seed 1, stream 2) is not (seed 2, stream 1)
    assert not torch.equal(stream_indices(n, 0, count, seed=1, stream=2), stream_indices(n, 0, count, seed=2, stream=1)), (
        "the seed and the stream number are mixed symmetrically: different runs share streams"
    )


# ----------------------------------------------------------------------------- micro-batches, ranks, augmentations


def test_ranks_split_each_global_step_into_consecutive_stream_positions():
    """With W ranks, rank r's micro-batch m is what a single process draws as micro-batch m*W + r."""
    hr, lr = _labelled(10, 4), _labelled(6, 2)
    single = MicroBatches(hr, lr, batch_size=3, seed=2)
    for world in (2, 3):
        for rank in range(world):
            ds = MicroBatches(hr, lr, batch_size=3, seed=2, rank=rank, world_size=world)
            for m in range(3):
                got, want = ds[m], single[m * world + rank]
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (
                    f"rank {rank} of {world}, micro-batch {m}: not the stream positions of global micro-batch "
                    f"{m * world + rank}: ranks overlap or skip images"
                )


def test_microbatches_are_deterministic_and_differ_between_steps():
    hr, lr = _labelled(8, 12), _labelled(8, 6)
    a = MicroBatches(hr, lr, batch_size=4, seed=5, crops=Crops(scale=2, crop_size=3, flip=True))
    b = MicroBatches(hr, lr, batch_size=4, seed=5, crops=Crops(scale=2, crop_size=3, flip=True))
    for m in (0, 3, 9):
        assert torch.equal(a[m][0], b[m][0]) and torch.equal(a[m][1], b[m][1]), (
            f"micro-batch {m} differs between two datasets with the same seed: sampling is not a function of (seed, step)"
        )
    assert not torch.equal(a[1][0], a[2][0]), "consecutive micro-batches are identical"
    c = MicroBatches(hr, lr, batch_size=4, seed=6, crops=Crops(scale=2, crop_size=3, flip=True))
    assert any(not torch.equal(a[m][0], c[m][0]) for m in range(3)), "the seed does not change the sampled crops"


def _locate(img: torch.Tensor) -> tuple[int, int, int, bool]:
    """(image index, top, left, mirrored) of a crop of a labelled image."""
    cols = img[2, 0].tolist()
    mirrored = len(cols) > 1 and cols[0] > cols[1]
    return int(img[0, 0, 0]), int(img[1, 0, 0]), min(cols), mirrored


def test_crops_are_contiguous_windows_lr_offsets_cover_every_pixel():
    scale, crop = 2, 3
    hr, lr = _labelled(4, 16), _labelled(4, 8)
    ds = MicroBatches(hr, lr, batch_size=4, seed=9, crops=Crops(scale=scale, crop_size=crop))
    lr_tops, lr_lefts, hr_tops = set(), set(), set()
    for m in range(40):
        h, low = ds[m]
        assert h.shape == (4, 3, crop * scale, crop * scale) and low.shape == (4, 3, crop, crop), "wrong crop sizes"
        for batch, tops, size in ((h, hr_tops, crop * scale), (low, lr_tops, crop)):
            for img in batch:
                idx, top, left, _ = _locate(img)
                assert torch.equal(img, _labelled(4, 16 if size == crop * scale else 8)[idx, :, top : top + size, left : left + size]), (
                    "a crop is not a contiguous window of its source image"
                )
                tops.add(top)
                if batch is low:
                    lr_lefts.add(left)
    assert lr_tops == set(range(8 - crop + 1)) and lr_lefts == set(range(8 - crop + 1)), (
        f"real LR crops start only at rows {sorted(lr_tops)} / columns {sorted(lr_lefts)}: "
        "every offset, the last one included, must be possible"
    )
    assert hr_tops == set(range(0, 16 - crop * scale + 1, scale)), (
        f"HR crops start at rows {sorted(hr_tops)}: they must cover every offset on the {scale}-pixel grid"
    )


def test_flips_mirror_hr_images_and_never_the_real_lr():
    """A mirrored real photo carries a mirrored degradation (a motion blur's direction): real LR stay as they are."""
    hr, lr = _labelled(8, 6), _labelled(8, 6)
    ds = MicroBatches(hr, lr, batch_size=8, seed=1, crops=Crops(flip=True))
    plain = MicroBatches(hr, lr, batch_size=8, seed=1)
    hr_flips = []
    for m in range(6):
        (fh, fl), (ph, pl) = ds[m], plain[m]
        assert torch.equal(fl, pl), "a real LR image was flipped: its degradation's orientation would be mirrored"
        for g, o in zip(fh, ph):
            assert torch.equal(g, o) or torch.equal(g, o.flip(-1)), "a flipped image is not the horizontal mirror of its source"
            hr_flips.append(not torch.equal(g, o))
    rate = sum(hr_flips) / len(hr_flips)
    assert 0.25 < rate < 0.75, f"HR images are flipped at rate {rate:.2f}: flips must happen about half the time"


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_yields_the_requested_microbatches_in_order(workers):
    hr, lr = _labelled(5, 4), _labelled(5, 2)
    ds = MicroBatches(hr, lr, batch_size=2, seed=3)
    got = list(make_loader(ds, 4, 9, num_workers=workers, pin_memory=False))
    assert len(got) == 5, f"the loader yielded {len(got)} micro-batches for the range 4..8"
    for m, (h, low) in zip(range(4, 9), got):
        assert torch.equal(h, ds[m][0]) and torch.equal(low, ds[m][1]), f"the loader's item for micro-batch {m} is not ds[{m}]"


# ----------------------------------------------------------------------------- decoding the image sets


def test_image_set_holds_every_readable_image_and_skips_broken_ones(tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = {f"img_{i}.png": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for i in range(3)}
    for name, arr in arrays.items():
        Image.fromarray(arr).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    s = load_image_set(tmp_path, 8, what="HR")
    assert s.images.shape == (3, 3, 8, 8) and s.images.dtype == torch.uint8
    assert [p.name for p in s.paths] == sorted(arrays), "paths do not list exactly the readable images"
    for p, img in zip(s.paths, s.images):
        assert torch.equal(img.permute(1, 2, 0), torch.from_numpy(arrays[p.name])), f"{p.name} is not stored as decoded (CHW)"
    assert [p.name for p, _ in s.skipped] == ["broken.png"] and s.resized == 0
    assert "skipping unreadable HR image" in capsys.readouterr().err and "broken.png" in s.skipped[0][0].name


def test_many_broken_images_are_summarised_and_all_broken_is_an_error(tmp_path, capsys):
    for i in range(7):
        (tmp_path / f"bad_{i}.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "good.png")
    s = load_image_set(tmp_path, 4, what="LR")
    err = capsys.readouterr().err
    assert len(s.skipped) == 7 and len(s.paths) == 1
    assert err.count("skipping unreadable LR image") == 5 and "2 more unreadable LR images skipped" in err
    (tmp_path / "good.png").unlink()
    with pytest.raises(DsganError, match="none of the 7 LR images could be read"):
        load_image_set(tmp_path, 4, what="LR")


def test_wrong_size_is_an_error_unless_resized_then_shorter_side_and_centre_crop(tmp_path):
    # 40 wide, 20 high, red | green | blue bands; resized to 20x10 the green band spans columns 2..17 and the
    # centre crop keeps columns 5..14 (an off-centre crop would take red or blue).
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)
    arr[:, 4:36] = (0, 200, 0)
    arr[:, 36:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    with pytest.raises(DsganError, match=r"wide\.png: HR image is 40x20, expected 10x10"):
        load_image_set(tmp_path, 10, what="HR")
    s = load_image_set(tmp_path, 10, what="HR", resize=True)
    assert s.resized == 1 and s.images.shape == (1, 3, 10, 10)
    img = s.images[0].permute(1, 2, 0).numpy().astype(int)
    assert np.abs(img - (0, 200, 0)).max() <= 3, (
        f"the resized image is not the centre of the short-side resize (max deviation from the middle band "
        f"{np.abs(img - (0, 200, 0)).max()}): wrong scale or an off-centre crop"
    )
    ref = np.asarray(Image.fromarray(arr).resize((20, 10), Image.Resampling.LANCZOS))[:, 5:15]
    assert np.array_equal(img, ref.astype(int)), "the resize is not the antialiased (Lanczos) resize of the shorter side"


def test_same_hr_and_lr_folder_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    check_data_dirs(tmp_path / "a", tmp_path / "b")
    with pytest.raises(DsganError, match="data.hr_dir and data.lr_dir are the same folder"):
        check_data_dirs(tmp_path / "a", tmp_path / "b" / ".." / "a")


def test_augmentations_depend_on_seed_step_and_rank():
    hr, lr = _labelled(1, 16), _labelled(1, 8)  # one image per set: only the crops and flips vary

    def draws(seed, rank):
        ds = MicroBatches(hr, lr, batch_size=3, seed=seed, rank=rank, world_size=2, crops=Crops(scale=2, crop_size=3, flip=True))
        return [ds[m] for m in range(4)]

    def same(a, b):
        return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))

    base = draws(5, 0)
    assert same(base, draws(5, 0)), "the same (seed, step, rank) drew different augmentations"
    assert not same(base, draws(6, 0)), "the seed does not change the crops and flips"
    assert not same(base, draws(5, 1)), "two ranks draw the same crops and flips at every step: their batches are correlated"
    assert any(not torch.equal(base[0][0], b[0]) for b in base[1:]), "every step draws the same crops"


def test_different_seeds_give_different_streams():
    streams = {tuple(stream_indices(10, 0, 30, seed=s, stream=1).tolist()) for s in range(200)}
    assert len(streams) == 200, f"200 seeds gave only {len(streams)} distinct data streams: the seed hash collides"
