"""The decoded-image cache: reused without decoding, invalidated by content, fails fast, shared by processes."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_images
from PIL import Image

from dsgan_cli.data import datacache
from dsgan_cli.data.datacache import DECODE_COUNTER, CacheRole, cached_image_set
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError


def pixels(path: Path) -> np.ndarray:
    """(3, H, W) uint8 of an image file, read with PIL directly."""
    return np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)


def mapped_files() -> dict[str, set[str]]:
    """Files this process has memory-mapped, with the permissions of their mappings (from /proc/self/maps)."""
    out: dict[str, set[str]] = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            out.setdefault(parts[5].strip(), set()).add(parts[1])
    return out


def test_second_load_maps_the_cache_without_decoding(tmp_path):
    paths = write_images(tmp_path / "hr", 5, 16, seed=0)
    cache = tmp_path / "cache"
    before = DECODE_COUNTER["images"]
    first, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    assert decoded and DECODE_COUNTER["images"] - before == 5
    second, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    assert not decoded and DECODE_COUNTER["images"] - before == 5  # nothing decoded the second time
    assert second.paths == paths and tuple(second.images.shape) == (5, 3, 16, 16)
    for i, p in enumerate(paths):
        assert np.array_equal(second.images[i].numpy(), pixels(p))
    (data_file,) = cache.glob("*.u8")
    perms = mapped_files()[str(data_file)]  # the pixels are the mapped file, not a private copy
    assert perms and all("w" not in p for p in perms)  # mapped read-only


def test_changed_image_content_selects_a_new_entry(tmp_path):
    paths = write_images(tmp_path / "hr", 4, 16, seed=0)
    cache = tmp_path / "cache"
    cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    new = np.full((16, 16, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(paths[2])  # same name, same size, new content
    before = DECODE_COUNTER["images"]
    s, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    assert decoded and DECODE_COUNTER["images"] - before == 4
    assert np.array_equal(s.images[2].numpy(), new.transpose(2, 0, 1))
    assert len(list(cache.glob("*.u8"))) == 2  # the old entry is left alone, never served for the new content


def test_recipe_size_is_part_of_the_key(tmp_path):
    write_images(tmp_path / "hr", 3, 16, seed=0)
    cache = tmp_path / "cache"
    a, _ = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    b, decoded = cached_image_set(tmp_path / "hr", 8, what="HR", cache_dir=cache, resize=True)
    assert decoded and tuple(b.images.shape) == (3, 3, 8, 8) and b.resized == 3


def test_wrong_size_fails_before_any_decode(tmp_path):
    write_images(tmp_path / "hr", 6, 16, seed=0)
    write_images(tmp_path / "odd", 1, 12, seed=3)
    bad = tmp_path / "hr" / "zz_last.png"
    (tmp_path / "odd" / "img_000.png").rename(bad)  # sorted last: a decode would reach it at the very end
    before = DECODE_COUNTER["images"]
    with pytest.raises(DsganError) as info:
        cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=tmp_path / "cache")
    assert str(bad) in str(info.value) and "12x12, expected 16x16" in str(info.value)
    assert DECODE_COUNTER["images"] == before
    assert not list((tmp_path / "cache").glob("*.u8"))


def test_unreadable_files_are_skipped_and_remembered(tmp_path, capsys):
    paths = write_images(tmp_path / "hr", 3, 16, seed=0)
    (tmp_path / "hr" / "broken.png").write_bytes(b"not an image")
    cache = tmp_path / "cache"
    a, _ = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    b, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    assert not decoded and b.paths == paths and len(b.images) == 3
    assert [p.name for p, _ in b.skipped] == ["broken.png"]
    assert capsys.readouterr().err.count("broken.png") == 2  # warned on the cached load too


def test_a_non_writer_waits_for_the_writer(tmp_path, monkeypatch):
    """The non-writer polls (seen through its sleep calls, not a wall-clock wait) until the writer is done."""
    paths = write_images(tmp_path / "hr", 4, 16, seed=0)
    cache = tmp_path / "cache"
    got, polls, polling = {}, [], threading.Event()
    real_sleep = datacache.time.sleep

    def counting_sleep(s):
        polls.append(s)
        if len(polls) == 3:
            polling.set()
        real_sleep(s)

    monkeypatch.setattr(datacache.time, "sleep", counting_sleep)
    waiter = threading.Thread(
        target=lambda: got.setdefault(
            "r", cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache, role=CacheRole(writer=False, poll_s=0.001))
        )
    )
    waiter.start()
    assert polling.wait(timeout=120), "the non-writer never polled"
    assert "r" not in got, "a non-writer finished with no cache entry written"
    _, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    waiter.join()
    images, waiter_decoded = got["r"]
    assert decoded and not waiter_decoded
    assert np.array_equal(images.images[3].numpy(), pixels(paths[3]))


def test_train_reuses_the_cache_and_resume_decodes_nothing(tmp_path, tiny_recipe, monkeypatch):
    from dsgan_cli.engines.train import train

    write_images(tmp_path / "hr", 4, 16, seed=0)
    write_images(tmp_path / "lr", 4, 8, seed=1, noise=12)
    cache = tmp_path / "cache"

    def recipe(out: str, iters: int):
        return load_recipe(
            tiny_recipe,
            [
                "data.hr_size=16",
                "data.lr_size=8",
                "train.batch_size=2",
                "loss.w_perceptual=0",
                f"train.iterations={iters}",
                f"data.hr_dir={json.dumps(str(tmp_path / 'hr'))}",
                f"data.lr_dir={json.dumps(str(tmp_path / 'lr'))}",
                f"data.cache_dir={json.dumps(str(cache))}",
                f"train.output_dir={json.dumps(str(tmp_path / out))}",
            ],
        )

    before = DECODE_COUNTER["images"]
    train(recipe("a", 2), progress=False)
    assert DECODE_COUNTER["images"] - before == 8 and len(list(cache.glob("*.u8"))) == 2
    train(recipe("a", 4), resume="latest", progress=False)
    train(recipe("b", 2), progress=False)
    assert DECODE_COUNTER["images"] - before == 8  # the resume and the second run decoded nothing


def test_cache_dir_none_decodes_into_ram(tmp_path, tiny_recipe):
    from dsgan_cli.data.training_sets import load_data

    write_images(tmp_path / "hr", 3, 16, seed=0)
    write_images(tmp_path / "lr", 3, 8, seed=1)
    r = load_recipe(
        tiny_recipe,
        [
            "data.hr_size=16",
            "data.lr_size=8",
            "data.cache_dir=none",
            f"data.hr_dir={json.dumps(str(tmp_path / 'hr'))}",
            f"data.lr_dir={json.dumps(str(tmp_path / 'lr'))}",
        ],
    )
    before = DECODE_COUNTER["images"]
    hr, lr = load_data(r, show=False)
    assert DECODE_COUNTER["images"] == before and len(hr.images) == 3 and hr.images.numpy().flags.writeable


def test_scan_memo_skips_unchanged_files_and_sees_changed_ones(tmp_path, monkeypatch):
    from dsgan_cli.data.datacache import scan_set

    paths = write_images(tmp_path / "hr", 4, 16, seed=0)
    memo = tmp_path / "memo.json"
    _, key1 = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    read = []
    real_scan_one = datacache._scan_one
    monkeypatch.setattr(datacache, "_scan_one", lambda p: read.append(p.name) or real_scan_one(p))
    _, key2 = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    assert key2 == key1 and read == []  # nothing re-read
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(paths[1])
    _, key3 = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    assert key3 != key1 and read == ["img_001.png"]
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(paths[2])  # now the wrong size
    with pytest.raises(DsganError, match="img_002.png.*12x12"):
        scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo)


def test_a_file_rewritten_in_place_with_its_size_mtime_and_inode_is_read_again(tmp_path, monkeypatch):
    """``cp -p`` / ``rsync -a --inplace`` keep size, mtime and inode; only the ctime tells (as for git's index)."""
    from dsgan_cli.data.datacache import scan_set

    paths = write_images(tmp_path / "hr", 3, 16, seed=0)
    memo = tmp_path / "memo.json"
    _, key1 = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    target = paths[1]
    st = target.stat()
    data = target.read_bytes()
    new = data[:-1] + bytes([data[-1] ^ 0xFF])  # same length, other content
    with open(target, "r+b") as f:  # in place: same inode
        f.write(new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored, as cp -p / rsync -a do
    while target.stat().st_ctime_ns == st.st_ctime_ns:  # a coarse file-system clock: touch until the ctime moves
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    read = []
    real_scan_one = datacache._scan_one
    monkeypatch.setattr(datacache, "_scan_one", lambda p: read.append(p.name) or real_scan_one(p))
    _, key2 = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    assert read == [target.name], "the rewritten file was not hashed again"
    assert key2 != key1, "the set's key must change with its content"


@pytest.mark.parametrize(
    "memo_text",
    ['{"img_000.png": [[1], "zz", [16, 16]]}', "[1, 2]", '{"img_000.png": [null, "' + "0" * 64 + '", [-1, 5]]}', '{"img_000.png": 7}'],
)
def test_a_malformed_scan_memo_is_ignored_not_trusted(tmp_path, memo_text):
    from dsgan_cli.data.datacache import scan_set

    write_images(tmp_path / "hr", 2, 16, seed=0)
    _, want = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1)
    memo = tmp_path / "memo.json"
    memo.write_text(memo_text)
    _, got = scan_set(tmp_path / "hr", 16, what="HR", resize=False, workers=1, memo=memo, save_memo=True)
    assert got == want


@pytest.mark.parametrize("damage", ["zeros", "meta"])
def test_a_damaged_cache_entry_is_decoded_again_not_trained_on(tmp_path, damage, capsys):
    """Pixels overwritten with zeros of the same size, or metadata of the wrong shape: the entry is rebuilt."""
    paths = write_images(tmp_path / "hr", 3, 16, seed=0)
    cache = tmp_path / "cache"
    cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    (data_file,) = cache.glob("*.u8")
    meta_file = data_file.with_suffix(".json")
    if damage == "zeros":
        data_file.write_bytes(b"\0" * data_file.stat().st_size)
    else:
        meta = json.loads(meta_file.read_text())
        meta["paths"] = meta["paths"][:-1]  # one name short of its count
        meta_file.write_text(json.dumps(meta))
    before = DECODE_COUNTER["images"]
    images, decoded = cached_image_set(tmp_path / "hr", 16, what="HR", cache_dir=cache)
    assert decoded and DECODE_COUNTER["images"] - before == 3, "the damaged entry was used instead of rebuilt"
    for i, p in enumerate(paths):
        assert np.array_equal(images.images[i].numpy(), pixels(p))
    if damage == "zeros":
        assert "cached pixels changed since they were decoded" in capsys.readouterr().err
