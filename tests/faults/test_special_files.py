"""Fault class: special and odd files: FIFOs, symlinks, device nodes, 254-byte names, unsupported and deep formats."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from badfiles import run_cli_many, tree_digest
from conftest import one_line_error, write_images
from hostile_use import degrade_args, face_photo
from PIL import Image

from dsgan_cli.data import images
from dsgan_cli.plumbing import writes
from dsgan_cli.plumbing.errors import DsganError

#: Longest legal file name on common Linux file systems (NAME_MAX) minus one.
LONG_STEM = "n" * 250  # + ".png" = 254 bytes


@pytest.mark.slow
def test_fifo_in_eval_folder_is_listed_not_waited_on(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 16, seed=1)
    write_images(real, 3, 16, seed=2)
    os.mkfifo(fake / "pipe.png")
    os.symlink(real / "gone.png", real / "dangling.png")
    before = tree_digest(tmp_path)
    (res,) = run_cli_many(
        [["eval", fake, real, "--no-fid", "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png", "--cache-dir", tmp_path / "cache"]],
        cwd=tmp_path,
        timeout=180,
    )
    assert res.returncode == 1, res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert "pipe.png: not a regular file (a FIFO" in " ".join(data["unreadable"]["fake"])
    assert "dangling.png: dangling symlink" in " ".join(data["unreadable"]["real"])
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.slow
def test_fifo_as_checkpoint_is_refused(tmp_path):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    os.mkfifo(tmp_path / "g.safetensors")
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", tmp_path / "g.safetensors")], timeout=180)
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(tmp_path / "g.safetensors"), "FIFO")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_reports_never_replace_symlinks_or_special_files(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 2, 16, seed=1)
    write_images(real, 2, 16, seed=2)
    keep = tmp_path / "keep.json"
    keep.write_text("user data\n")
    os.symlink(keep, tmp_path / "link.json")
    os.mkfifo(tmp_path / "pipe.png")
    targets = [("--json", tmp_path / "link.json", "a symlink"), ("--plot", tmp_path / "pipe.png", "a FIFO")]
    try:
        os.mknod(tmp_path / "null.png", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets.append(("--plot", tmp_path / "null.png", "character device"))
    except PermissionError:
        pass  # not root: no device node can be made here
    cases = []
    for opt, path, _ in targets:
        other = ["--plot", tmp_path / "p.png"] if opt == "--json" else ["--json", tmp_path / "j.json"]
        cases.append(["eval", fake, real, "--no-fid", opt, path, *other, "--cache-dir", tmp_path / "cache"])
    for (opt, path, kind), res in zip(targets, run_cli_many(cases, cwd=tmp_path, timeout=180)):
        assert res.returncode == 2, (opt, res.stderr)
        one_line_error(res.stderr, str(path), kind)
    assert os.readlink(tmp_path / "link.json") == str(keep) and keep.read_text() == "user data\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.png").st_mode)
    if len(targets) == 3:
        assert stat.S_ISCHR(os.lstat(tmp_path / "null.png").st_mode)
    assert not (tmp_path / "j.json").exists() and not (tmp_path / "p.png").exists()  # refused before the work


def test_atomic_writer_refuses_to_replace_a_symlink(tmp_path):
    target = tmp_path / "target.png"
    target.write_bytes(b"user")
    os.symlink(target, tmp_path / "link.png")
    with pytest.raises(DsganError, match="symlink"):
        writes.write_bytes_atomic(tmp_path / "link.png", b"new")
    assert os.path.islink(tmp_path / "link.png") and target.read_bytes() == b"user"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "target.png"]


@pytest.mark.slow
def test_prepare_dangling_symlink_is_listed_and_the_run_completes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / "face.png")
    os.symlink(raw / "missing.png", raw / "broken.png")
    os.mkfifo(raw / "pipe.jpg")
    out = tmp_path / "out"
    (res,) = run_cli_many([["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress"]], timeout=300)
    assert res.returncode == 1, res.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["broken.png"]["status"] == "unreadable" and "dangling symlink" in records["broken.png"]["reason"]
    assert records["pipe.jpg"]["status"] == "unreadable" and "FIFO" in records["pipe.jpg"]["reason"]
    assert records["face.png"]["status"] in ("ok", "several_faces")


@pytest.mark.slow
def test_degrade_converts_a_254_byte_file_name(tmp_path, gens):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    name = LONG_STEM + ".png"
    assert len(name.encode()) == 254
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(inp / name)
    (res,) = run_cli_many([degrade_args(inp, out, gens["g1"], "--json")])
    assert res.returncode == 0, res.stderr
    assert Image.open(out / name).size == (8, 8)
    assert [p.name for p in out.iterdir() if p.name.endswith(".partial")] == []


def test_partial_names_fit_the_name_limit(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for n in (1, 100, limit - 4, limit):
        name = ("é" * n).encode()[:limit].decode(errors="ignore") or "x"
        prefix = writes.partial_prefix(tmp_path / name)
        assert len(os.fsencode(prefix)) + 8 + len(".partial") <= limit
        writes.write_bytes_atomic(tmp_path / name, b"ok")
        assert (tmp_path / name).read_bytes() == b"ok"


@pytest.mark.slow
def test_prepare_long_name_does_not_abort_the_run(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / (LONG_STEM + ".png"))
    write_images(raw, 1, 16)
    out = tmp_path / "out"
    (res,) = run_cli_many([["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress"]])
    assert res.returncode == 0, res.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records[LONG_STEM + ".png"]["status"] in ("ok", "several_faces")
    assert Image.open(out / (LONG_STEM + ".png")).size == (64, 64)


@pytest.mark.slow
def test_gif_avif_and_disguised_eps_are_listed_not_ignored_or_decoded(tmp_path, gens):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(inp / "anim.gif")
    (inp / "photo.avif").write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf")
    # An EPS file named .png: a Pillow plugin would hand it to Ghostscript.
    (inp / "vector.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto showpage\n")
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", gens["g1"], "--json")])
    assert res.returncode == 1, res.stderr
    failed = {Path(f["path"]).name: f["reason"] for f in json.loads(res.stdout)["failed"]}
    assert "GIF files are not supported" in failed["anim.gif"]
    assert "AVIF files are not supported" in failed["photo.avif"]
    assert "unrecognised format" in failed["vector.png"] and "ghostscript" not in failed["vector.png"].lower()


@pytest.mark.parametrize(
    "mode, values, expected", [("F", [0.0, 250.0, 500.0, 1000.0], [0, 64, 128, 255]), ("I", [0, 70000, 140000, 280000], [0, 64, 128, 255])]
)
def test_float_and_int32_tiffs_are_rescaled_not_clipped(tmp_path, mode, values, expected):
    arr = np.array([values], dtype=np.float32 if mode == "F" else np.int32)
    path = tmp_path / f"deep_{mode}.tif"
    Image.fromarray(arr, mode).save(path)
    img, converted = images.load_rgb(path)
    assert converted == mode
    assert np.asarray(img)[0, :, 0].tolist() == expected


def test_a_symlink_at_the_run_folders_lock_is_refused_not_followed(tmp_path):
    from dsgan_cli.engines.rundir import LOCK_FILE, lock_run_folder

    victim = tmp_path / "img_0.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(DsganError, match="lock"):
        lock_run_folder(out)
    assert victim.read_bytes() == b"precious"
