"""Fault class: the mode and durability of written files (umask, fsync of the folder)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from conftest import write_images
from PIL import Image

from dsgan_cli.engines.checkpoint import save_generator
from dsgan_cli.method.models import Generator, GeneratorConfig
from dsgan_cli.plumbing import writes


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        writes.write_bytes_atomic(tmp_path / "a.bin", b"x")
        writes.save_image_atomic(Image.new("RGB", (2, 2)), tmp_path / "b.png")
        save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), tmp_path / "g.safetensors", step=0, scale=2)
    finally:
        os.umask(old)
    for name in ("a.bin", "b.png", "g.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


@pytest.mark.slow
def test_degrade_outputs_follow_the_umask(tmp_path, gens):
    inp = tmp_path / "in"
    write_images(inp, 2, 16)
    code = "import os, sys; os.umask(0o022); from dsgan_cli.cli import main; main(sys.argv[1:])"
    env = dict(os.environ, DSGAN_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", code, "degrade", str(inp), str(tmp_path / "out"), "--checkpoint", str(gens["g1"]), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    files = [p for p in (tmp_path / "out").iterdir()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), [oct(p.stat().st_mode) for p in files]


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino, os.path.exists(tmp_path / "f.bin")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    writes.write_bytes_atomic(tmp_path / "f.bin", b"data")
    folder = (True, tmp_path.stat().st_ino, True)
    assert folder in synced and synced.index(folder) == len(synced) - 1, synced
