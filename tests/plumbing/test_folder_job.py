"""The output folder a command fills is its own for the run: locked, its record in step with what was written,
stale outputs of its own removed, a user's files never touched (``degrade``, ``pairs``, ``prepare``)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, small_generator_file, write_images
from PIL import Image

from dsgan_cli.plumbing.folder_lock import OUTPUT_LOCK

REPLACING = "replacing_earlier_outputs"


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> tuple[Path, Path]:
    """A (zero padding: processes a 1x1 LR) and B (reflect padding: cannot)."""
    d = tmp_path_factory.mktemp("gens")
    return (small_generator_file(d / "a.safetensors", seed=1), small_generator_file(d / "b.safetensors", seed=2, padding="reflect"))


def photos(folder: Path) -> Path:
    """Four 16-px photos and one 2x2 one (1x1 after the x2 downscale: too small for reflect padding)."""
    write_images(folder, 4, 16)
    Image.fromarray(np.full((2, 2, 3), 90, np.uint8)).save(folder / "tiny.png")
    return folder


def record(path: Path) -> dict:
    return json.loads(path.read_text())


def test_degrade_replacing_run_with_failures_leaves_no_earlier_output_and_keeps_the_mark(tmp_path, generators):
    a, b = generators
    inp, out = photos(tmp_path / "in"), tmp_path / "out"
    assert run_cli("degrade", inp, out, "-c", a).returncode == 0
    assert (out / "tiny.png").is_file()
    res = run_cli("degrade", inp, out, "-c", b, "--overwrite", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["written"] == 4, res.stderr
    assert not (out / "tiny.png").exists(), "A's output of an input B failed on stayed under B's record"
    rec = record(out / ".dsgan-degrade.json")
    assert rec.get(REPLACING) is True, "the mark was cleared although one output was not rewritten"
    assert "tiny.png" not in rec["outputs"] and len(rec["outputs"]) == 4
    res = run_cli("degrade", inp, out, "-c", b)
    assert res.returncode == 2 and "did not finish" in res.stderr, res.stderr
    assert "skipped" not in res.stderr


def test_pairs_replacing_run_with_failures_lists_no_earlier_pair(tmp_path, generators):
    a, b = generators
    inp, out = photos(tmp_path / "in"), tmp_path / "out"
    assert run_cli("pairs", inp, out, "-c", a).returncode == 0
    assert "tiny.png" in (out / "meta_info.txt").read_text()
    res = run_cli("pairs", inp, out, "-c", b, "--overwrite", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["pairs"] == 4, res.stderr
    assert not (out / "hr" / "tiny.png").exists() and not (out / "lr" / "tiny.png").exists()
    assert "tiny.png" not in (out / "meta_info.txt").read_text()
    assert record(out / "pairs.json").get(REPLACING) is True
    res = run_cli("pairs", inp, out, "-c", b)
    assert res.returncode == 2 and "did not finish" in res.stderr, res.stderr


def test_a_complete_replacing_run_clears_the_mark(tmp_path, generators):
    a, _ = generators
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 3, 16)
    assert run_cli("degrade", inp, out, "-c", a).returncode == 0
    other = small_generator_file(tmp_path / "c.safetensors", seed=3)
    res = run_cli("degrade", inp, out, "-c", other, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert REPLACING not in record(out / ".dsgan-degrade.json")


def test_outputs_of_inputs_that_are_gone_are_removed_and_a_users_file_is_kept(tmp_path, generators):
    a, _ = generators
    inp, out = tmp_path / "in", tmp_path / "out"
    srcs = write_images(inp, 3, 16)
    assert run_cli("degrade", inp, out, "-c", a).returncode == 0
    (out / "notes.png").write_bytes(b"the user's own file")
    srcs[0].unlink()
    res = run_cli("degrade", inp, out, "-c", a, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["skipped"] == 2, res.stderr
    assert not (out / srcs[0].name).exists(), "the output of a removed input stayed"
    assert (out / "notes.png").read_bytes() == b"the user's own file"
    assert sorted(record(out / ".dsgan-degrade.json")["outputs"]) == sorted(s.name for s in srcs[1:])


def test_a_planted_record_cannot_point_outside_the_folder(tmp_path, generators):
    a, _ = generators
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 2, 16)
    assert run_cli("degrade", inp, out, "-c", a).returncode == 0
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep")
    rec = record(out / ".dsgan-degrade.json")
    rec["outputs"] += ["../victim.png", str(victim)]
    (out / ".dsgan-degrade.json").write_text(json.dumps(rec))
    assert run_cli("degrade", inp, out, "-c", a).returncode == 0
    assert victim.read_bytes() == b"keep"


HOLD = """
import sys, time
from pathlib import Path
from dsgan_cli.plumbing.folder_lock import lock_output_folder
lock_output_folder(Path(sys.argv[1]), "test holder")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("command", ["degrade", "pairs", "prepare"])
def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, generators, command):
    a, _ = generators
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 2, 16)
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["prepare", inp, "--out", out, "--workers", "1"] if command == "prepare" else [command, inp, out, "-c", a]
        res = run_cli(*args)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: {out}: another dsgan run"), res.stderr
    assert f"pid {holder.pid} (dsgan test holder)" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_LOCK], "the refused run wrote into the folder"


def test_a_hard_link_at_the_locks_name_is_refused_not_truncated(tmp_path, generators):
    from dsgan_cli.engines.rundir import LOCK_FILE, lock_run_folder
    from dsgan_cli.plumbing.errors import DsganError

    a, _ = generators
    precious = tmp_path / "precious.txt"
    precious.write_text("user data")
    run = tmp_path / "run"
    run.mkdir()
    os.link(precious, run / LOCK_FILE)
    with pytest.raises(DsganError, match="hard link"):
        lock_run_folder(run)
    assert precious.read_text() == "user data"
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp, 1, 16)
    out.mkdir()
    os.link(precious, out / OUTPUT_LOCK)
    res = run_cli("degrade", inp, out, "-c", a)
    assert res.returncode == 2 and "hard link" in res.stderr, res.stderr
    assert precious.read_text() == "user data"


def test_an_unsupported_file_does_not_take_the_name_a_readable_image_needs(tmp_path, generators):
    a, _ = generators
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(inp / "anim.gif")
    Image.fromarray(np.full((16, 16, 3), 60, np.uint8)).save(inp / "anim.webp", lossless=True)
    res = run_cli("degrade", inp, out, "-c", a, "--json")
    assert res.returncode == 1, res.stderr
    failed = json.loads(res.stdout)["failed"]
    assert [f["path"] for f in failed] == [str(inp / "anim.gif")] and "not supported" in failed[0]["reason"]
    assert (out / "anim.png").is_file()


def test_a_pair_whose_hr_write_fails_names_the_hr_file(tmp_path, monkeypatch):
    import torch

    from dsgan_cli.engines import output_writer
    from dsgan_cli.engines.jobs import Job
    from dsgan_cli.engines.output_writer import Writer

    def full_disk(img, dest, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_writer, "save_image_atomic", full_disk)
    seen = []
    writer = Writer("PNG", 1, 2, on_done=lambda job, err: seen.append(err))
    job = Job(tmp_path / "a.png", tmp_path / "lr" / "a.png", "a.png", tmp_path / "hr" / "a.png")
    writer.submit(torch.zeros(3, 4, 4), job, torch.zeros(8, 8, 3, dtype=torch.uint8))
    writer.close()
    assert seen == [f"cannot write {tmp_path / 'hr' / 'a.png'} (No space left on device)"]


skdata = pytest.importorskip("skimage.data")


def test_prepare_removes_its_crop_once_the_photo_has_no_face(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(skdata.astronaut()).save(raw / "person.png")
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.png").write_bytes(b"the user's own file")
    res = run_cli("prepare", raw, "--out", out, "--size", "64", "--workers", "1")
    assert res.returncode == 0 and (out / "person.png").is_file(), res.stderr
    Image.fromarray(skdata.chelsea()).save(raw / "person.png")  # the same name, now a cat: no face
    res = run_cli("prepare", raw, "--out", out, "--size", "64", "--workers", "1")
    assert res.returncode == 0, res.stderr
    rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert rec["status"] == "no_face" and rec["output"] is None
    assert not (out / "person.png").exists(), "the stale crop stayed where train reads the folder"
    assert (out / "notes" / "mine.png").read_bytes() == b"the user's own file"
