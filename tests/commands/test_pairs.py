"""``pairs``: SR training pairs on real files, read back the way BasicSR's PairedImageDataset reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_only, run_cli, small_generator_file, synthetic_face_like, write_images
from PIL import Image

from dsgan_cli.engines.checkpoint import load_generator
from dsgan_cli.method.models import downscale


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small generator (scale 2) with non-trivial weights."""
    return small_generator_file(tmp_path_factory.mktemp("ckpt") / "generator.safetensors", seed=1)


def write_image(path: Path, w: int, h: int, seed: int) -> np.ndarray:
    """A structured RGB image of w x h pixels; returns its pixels."""
    arr = synthetic_face_like(max(w, h), seed)[:h, :w]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return arr


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def g_of(ckpt: Path, hr_u8: np.ndarray, scale: int) -> np.ndarray:
    """round(G(bicubic downscale(HR))) computed directly, uint8 HWC."""
    g, _ = load_generator(ckpt)
    x = torch.from_numpy(hr_u8.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    with torch.no_grad():
        y = g(downscale(x, scale))[0]
    return y.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def basicsr_paired_folder_check(gt_folder: Path, lq_folder: Path, scale: int, meta_info: Path) -> list[tuple[Path, Path]]:
    """What BasicSR's paired-folder and meta_info modes require, restated as assertions."""
    # scandir(folder) without recursion: plain files whose names do not start with '.'
    lq = sorted(e.name for e in os.scandir(lq_folder) if e.is_file() and not e.name.startswith("."))
    gt = sorted(e.name for e in os.scandir(gt_folder) if e.is_file() and not e.name.startswith("."))
    assert len(lq) == len(gt), "GT and LQ folders should have the same number of images"
    pairs = []
    for name in gt:
        assert name in lq, f"{name} is not in lq_paths"  # filename_tmpl '{}', same extension
        pairs.append((gt_folder / name, lq_folder / name))
    # meta_info mode: first token of each line is the GT name, the LQ file has the same base name
    listed = [line.split(" ")[0] for line in meta_info.read_text().splitlines()]
    assert sorted(listed) == gt
    for line in meta_info.read_text().splitlines():
        name, shape = line.split(" ")
        with Image.open(gt_folder / name) as im:
            assert shape == f"({im.height},{im.width},3)"
    # paired_random_crop: GT size must be exactly scale x LQ size
    for g, q in pairs:
        with Image.open(g) as a, Image.open(q) as b:
            assert a.height == b.height * scale and a.width == b.width * scale, (g, a.size, b.size)
    return pairs


@pytest.mark.slow
def test_pairs_load_like_basicsr_with_exact_scale_and_names(tmp_path, ckpt):
    inp = tmp_path / "hr_in"
    originals = {
        "a.png": write_image(inp / "a.png", 37, 29, 1),  # odd sizes: cropped to 36x28
        "b.png": write_image(inp / "b.png", 32, 32, 2),
        "sub__c.png": write_image(inp / "sub" / "c.png", 25, 40, 3),  # nested input: flat name
    }
    Image.fromarray(synthetic_face_like(20, 4)).save(inp / "d.jpg", quality=90)
    res = run_cli("pairs", inp, tmp_path / "pairs", "--checkpoint", ckpt, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 4 and summary["pairs"] == 4 and summary["scale"] == 2
    pairs = basicsr_paired_folder_check(tmp_path / "pairs" / "hr", tmp_path / "pairs" / "lr", 2, tmp_path / "pairs" / "meta_info.txt")
    assert sorted(g.name for g, _ in pairs) == ["a.png", "b.png", "d.png", "sub__c.png"]
    for name, arr in originals.items():
        hr = pixels(tmp_path / "pairs" / "hr" / name)
        h, w = arr.shape[0] // 2 * 2, arr.shape[1] // 2 * 2
        assert np.array_equal(hr, arr[:h, :w])  # SDSR: HR is the input, cropped
        assert np.array_equal(pixels(tmp_path / "pairs" / "lr" / name), g_of(ckpt, hr, 2))
    assert "a.png (28,36,3)" in (tmp_path / "pairs" / "meta_info.txt").read_text().splitlines()
    assert not list((tmp_path / "pairs").rglob("*.partial"))


@pytest.mark.slow
def test_cleanup_factor_is_tdsr(tmp_path, ckpt):
    inp = tmp_path / "in"
    arr = write_image(inp / "x.png", 50, 42, 5)
    res = run_cli("pairs", inp, tmp_path / "out", "-c", ckpt, "--cleanup-factor", "2", "--scale", "4")
    assert res.returncode == 0, res.stderr
    hr = pixels(tmp_path / "out" / "hr" / "x.png")
    assert hr.shape == (20, 24, 3)  # 42x50 -> 21x25 after clean-up -> 20x24, a multiple of 4
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    cleaned = downscale(x, 2)[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.abs(hr.astype(int) - cleaned[:20, :24].astype(int)).max() <= 1
    lr = pixels(tmp_path / "out" / "lr" / "x.png")
    assert lr.shape == (5, 6, 3) and np.array_equal(lr, g_of(ckpt, hr, 4))
    basicsr_paired_folder_check(tmp_path / "out" / "hr", tmp_path / "out" / "lr", 4, tmp_path / "out" / "meta_info.txt")


@pytest.mark.slow
def test_pairs_resume_skip_and_redo_only_incomplete(tmp_path, ckpt):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 3, 24)
    assert run_cli("pairs", inp, out, "-c", ckpt).returncode == 0
    meta = (out / "meta_info.txt").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    (out / "lr" / "img_001.png").unlink()  # a run killed between HR and LR
    (out / "lr" / ".img_002.png.abcd.partial").write_bytes(b"half")  # and a leftover temporary
    res = run_cli("pairs", inp, out, "-c", ckpt, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 1 and summary["skipped"] == 2 and summary["pairs"] == 3
    assert (out / "meta_info.txt").read_text() == meta
    assert not list(out.rglob("*.partial"))
    for p, t in stamps.items():
        if p.name != "img_001.png":
            assert p.stat().st_mtime_ns == t, p


@pytest.mark.slow
def test_pairs_refuse_other_settings_and_report_bad_images(tmp_path, ckpt):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 2, 16)
    (inp / "broken.png").write_text("not an image")
    write_image(inp / "dup.png", 16, 16, 9)
    write_image(inp / "dup.bmp", 16, 16, 9)  # same flat name as dup.png
    (inp / "tiny.png").parent.mkdir(exist_ok=True)
    Image.new("RGB", (1, 1)).save(inp / "tiny.png")  # smaller than the scale
    res = run_cli("pairs", inp, out, "-c", ckpt, "--json")
    assert res.returncode == 1, res.stderr
    failed = {Path(f["path"]).name: f["reason"] for f in json.loads(res.stdout)["failed"]}
    assert set(failed) == {"broken.png", "dup.png", "tiny.png"}, failed
    assert sorted(p.name for p in (out / "hr").iterdir()) == ["dup.png", "img_000.png", "img_001.png"]
    assert len((out / "meta_info.txt").read_text().splitlines()) == 3
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run_cli("pairs", inp, out, "-c", ckpt, "--cleanup-factor", "2")
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1 and "cleanup_factor" in res.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_pair_files_get_the_users_umask(tmp_path, ckpt, umask):
    import subprocess
    import sys

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 1, 16)
    cmd = f"umask {umask:03o} && exec {sys.executable} -m dsgan_cli pairs {inp} {out} -c {ckpt} --no-progress"
    res = subprocess.run(["sh", "-c", cmd], env=dict(os.environ, DSGAN_OFFLINE="1"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for p in [out / "hr" / "img_000.png", out / "lr" / "img_000.png", out / "meta_info.txt", out / "pairs.json"]:
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, (p, oct(p.stat().st_mode))


@pytest.mark.slow
def test_pairs_folder_must_not_overlap_the_input(tmp_path, ckpt):
    pairs = tmp_path / "pairs"
    for inp in (pairs / "hr", pairs / "lr" / "x", tmp_path / "in"):
        write_images(inp, 1, 16)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.png")}
    for inp, out in ((pairs / "hr", pairs), (pairs / "lr" / "x", pairs), (tmp_path / "in", tmp_path / "in" / "pairs")):
        res = run_cli("pairs", inp, out, "-c", ckpt)
        assert res.returncode == 2, (inp, out, res.stderr)
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.png")} == before
    assert not (pairs / "meta_info.txt").exists()


# --------------------------------------------------------------------------- one inference engine with degrade


@pytest.fixture(scope="module")
def noise_ckpt(tmp_path_factory) -> Path:
    """A small reflect-padded generator with output noise (the idphoto recipe's kind)."""
    return small_generator_file(
        tmp_path_factory.mktemp("noise_ckpt") / "generator.safetensors", seed=4, output_noise=True, padding="reflect", output="residual"
    )


@pytest.mark.slow
def test_pairs_lr_is_degrade_output_byte_for_byte_with_a_noise_generator(tmp_path, noise_ckpt):
    inp = tmp_path / "in"
    write_images(inp, 3, 40)
    write_image(inp / "sub" / "deep.png", 36, 28, 9)
    common = ["-c", noise_ckpt, "--seed", "5", "--no-progress"]
    assert run_cli("pairs", inp, tmp_path / "pairs", *common).returncode == 0
    res = run_cli("degrade", inp, tmp_path / "deg", *common)
    assert res.returncode == 0, res.stderr
    for rel, name in [("img_000.png", "img_000.png"), ("img_002.png", "img_002.png"), ("sub/deep.png", "sub__deep.png")]:
        assert (tmp_path / "pairs" / "lr" / name).read_bytes() == (tmp_path / "deg" / rel).read_bytes(), (
            f"{name}: pairs' LR differs from degrade's output for the same image, generator and seed"
        )


@pytest.mark.slow
def test_pairs_with_noise_are_reproducible_tile_exact_and_follow_the_seed(tmp_path, noise_ckpt):
    inp = tmp_path / "in"
    srcs = write_images(inp, 3, 64)
    base = ["-c", noise_ckpt, "--no-progress"]
    runs = {
        "a": [*base, "--seed", "1"],
        "again": [*base, "--seed", "1"],
        "tiled": [*base, "--seed", "1", "--tile", "8", "--batch-size", "2"],
        "other": [*base, "--seed", "2"],
    }
    for name, args in runs.items():
        res = run_cli("pairs", inp, tmp_path / name, *args)
        assert res.returncode == 0, res.stderr
    for src in srcs:
        lr = {name: pixels(tmp_path / name / "lr" / src.name).astype(int) for name in runs}
        assert np.array_equal(lr["a"], lr["again"]), "two runs of the same command must give the same LR"
        diff = np.abs(lr["a"] - lr["tiled"])
        # equal up to float summation order (a rounding flip of one level, rarely)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.002, f"tiled LR differs from whole-image LR (max {diff.max()})"
        assert (lr["a"] != lr["other"]).mean() > 0.2, "another seed must draw other noise"


@pytest.mark.slow
def test_one_tiny_image_fails_alone_with_a_reflect_padded_generator(tmp_path, noise_ckpt):
    inp = tmp_path / "in"
    write_images(inp, 4, 24)
    write_image(inp / "tiny.png", 2, 3, 3)  # LR 1x1 (1x2 for degrade): too small for reflect padding
    res = run_cli("pairs", inp, tmp_path / "pairs", "-c", noise_ckpt, "--json")
    assert res.returncode == 1, res.stderr  # some items failed
    summary = json.loads(res.stdout)
    assert summary["written"] == 4 and summary["pairs"] == 4
    assert [f["path"] for f in summary["failed"]] == [str(inp / "tiny.png")]
    assert len((tmp_path / "pairs" / "meta_info.txt").read_text().splitlines()) == 4
    res = run_cli("degrade", inp, tmp_path / "deg", "-c", noise_ckpt, "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["written"] == 4, res.stderr


@pytest.mark.slow
def test_an_interrupted_overwrite_with_another_generator_is_not_taken_for_done(tmp_path, ckpt, noise_ckpt):
    """pairs -c A; pairs -c B --overwrite (interrupted: only its record written); pairs -c B must not call A's pairs B's."""
    from dsgan_cli.commands.pairs import SETTINGS_FILE
    from dsgan_cli.engines.checkpoint import read_generator_file
    from dsgan_cli.plumbing.output_record import output_record, write_output_record

    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 3, 24)
    assert run_cli("pairs", inp, out, "-c", ckpt).returncode == 0
    b_sha = read_generator_file(noise_ckpt)[1]["sha256"]
    # What an --overwrite run with B has written before its first pair: the record, marked as replacing.
    write_output_record(out / SETTINGS_FILE, output_record(b_sha, 2, ".png", None, 0, cleanup_factor=1), replacing=True)
    res = run_cli("pairs", inp, out, "-c", noise_ckpt)
    assert res.returncode == 2 and "did not finish" in res.stderr, res.stderr
    res = run_cli("pairs", inp, out, "-c", noise_ckpt, "--overwrite", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["written"] == 3, res.stderr
    assert "replacing_earlier_outputs" not in json.loads((out / SETTINGS_FILE).read_text())


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_converted_by_degrade_and_pairs(tmp_path, noise_ckpt):
    inp = tmp_path / "in"
    write_images(inp, 2, 24)
    odd = inp / os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    write_image(odd, 24, 24, 5)
    res = run_cli("degrade", inp, tmp_path / "deg", "-c", noise_ckpt, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["written"] == 3, res.stderr
    res = run_cli("pairs", inp, tmp_path / "pairs", "-c", noise_ckpt, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["pairs"] == 3, res.stderr
    assert b"caf\xe9.png (24,24,3)" in (tmp_path / "pairs" / "meta_info.txt").read_bytes()
    assert (tmp_path / "pairs" / "lr" / odd.name).read_bytes() == (tmp_path / "deg" / odd.name).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("obstacle", ["symlink", "fifo", "folder", "lr is a file"])
def test_a_bad_output_name_or_folder_is_refused_before_any_pair_is_written(tmp_path, ckpt, obstacle):
    """A symlink, FIFO or folder at one output name, or an lr/ that is no folder, stops the run before its first write."""
    write_images(tmp_path / "in", 4, 16, seed=3)
    out = tmp_path / "out"
    (out / "lr").mkdir(parents=True)
    name = sorted(p.name for p in (tmp_path / "in").iterdir())[-1]  # the last pair, reached after the others
    target = out / "lr" / name
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"user data")
    if obstacle == "symlink":
        os.symlink(keep, target)
    elif obstacle == "fifo":
        os.mkfifo(target)
    elif obstacle == "folder":
        target.mkdir()
    else:
        (out / "lr").rmdir()
        (out / "lr").write_bytes(b"user data")
    res = run_cli("pairs", str(tmp_path / "in"), str(out), "-c", str(ckpt))
    assert res.returncode == 2, res.stderr
    last = [ln for ln in res.stderr.splitlines() if ln.strip()][-1]
    where = out / "lr" if obstacle == "lr is a file" else target
    assert last.startswith(f"error: {where}: "), res.stderr
    assert "Traceback" not in res.stderr
    assert not (out / "hr").exists() or not any((out / "hr").iterdir()), "pairs were written before the refusal"
    assert keep.read_bytes() == b"user data"


@pytest.mark.slow
def test_a_read_only_lr_folder_is_refused_before_any_pair_is_written(tmp_path, ckpt):
    write_images(tmp_path / "in", 3, 16, seed=3)
    out = tmp_path / "out"
    (out / "lr").mkdir(parents=True)
    with read_only(out / "lr"):
        res = run_cli("pairs", str(tmp_path / "in"), str(out), "-c", str(ckpt))
    assert res.returncode == 2, res.stderr
    last = [ln for ln in res.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith(f"error: {out / 'lr'}: output folder is not writable"), res.stderr
    assert not (out / "hr").exists() or not any((out / "hr").iterdir()), "pairs were written before the refusal"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["degrade", "pairs"])
def test_a_closed_stdout_pipe_is_not_reported_as_failed_items(tmp_path, ckpt, command):
    """``dsgan degrade IN OUT --json | head -c0``: the work is done and exit is 141 (SIGPIPE's), not 1 ("items failed")."""
    import subprocess
    import sys

    write_images(tmp_path / "in", 2, 16, seed=3)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command prints its report
    try:
        res = subprocess.run(
            [sys.executable, "-m", "dsgan_cli", command, str(tmp_path / "in"), str(tmp_path / "out"), "-c", str(ckpt), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            env={**os.environ, "DSGAN_OFFLINE": "1"},
        )
    finally:
        os.close(write_end)
    assert res.returncode == 141, res.stderr
    assert "Traceback" not in res.stderr and "Exception ignored" not in res.stderr, res.stderr
    outputs = list((tmp_path / "out").rglob("*.png"))
    assert len(outputs) == (4 if command == "pairs" else 2), "the work before the report must be done"
