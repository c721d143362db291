"""Tensors read from a file are bounded by the bytes the file holds: stride-0, overlapping or otherwise non-dense
storage is refused with ``error: FILE: reason`` (exit 2) before anything is allocated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from dsgan_cli.commands.importer import GENERATOR_KEY, expected_shapes


def expanded_checkpoint(path: Path, channels: int, view) -> Path:
    """An original-format checkpoint whose generator tensors have the expected shapes but are views of a few bytes."""
    state = {k: view(shape) for k, shape in expected_shapes(8, channels).items()}
    torch.save({GENERATOR_KEY: state, "epoch": 1, "iteration": 2}, path)
    return path


def stride0(shape):
    return torch.ones(1).expand(*shape)


def overlapping(shape):
    """Every dimension steps by one element, so the rows overlap (1-D tensors stay plain)."""
    if len(shape) < 2:
        return torch.ones(shape)
    return torch.ones(sum(s - 1 for s in shape) + 1).as_strided(shape, [1] * len(shape))


@pytest.mark.parametrize("view", [stride0, overlapping])
def test_import_refuses_views_that_stand_for_more_than_the_file_before_allocating(tmp_path, view):
    src = expanded_checkpoint(tmp_path / "views.tar", 1024, view)
    assert src.stat().st_size < 2**20 * 8
    out = tmp_path / "g.safetensors"
    # The child reports its peak memory on stdout: the expanded network alone would be 1.2 GB as float32.
    peak = (
        "import resource, sys\nfrom dsgan_cli.cli import main\ntry:\n    main()\nfinally:\n"
        "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    )
    res = subprocess.run([sys.executable, "-c", peak, "import", str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
    baseline = subprocess.run([sys.executable, "-c", peak, "--version"], capture_output=True, text=True, timeout=300)
    grown = int(res.stdout.split()[-1]) - int(baseline.stdout.split()[-1])
    assert grown < 300 * 2**20, f"the refused import grew by {grown / 2**20:.0f} MiB"
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"error: {src}: "), res.stderr
    assert "not stored densely" in res.stderr
    assert not out.exists()


def test_a_weights_file_of_views_is_refused(tmp_path):
    from dsgan_cli.plumbing.errors import DsganError
    from dsgan_cli.plumbing.tensor_files import load_weights_file

    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1).expand(4096, 4096)}, path)
    with pytest.raises(DsganError, match="not stored densely"):
        load_weights_file(path, "test weights")
    torch.save({"a": torch.zeros(3, 4).t(), "b": torch.ones(2)}, path)  # a transposed (dense) tensor is fine
    assert set(load_weights_file(path, "test weights")) == {"a", "b"}


def test_a_plain_checkpoint_still_imports(tmp_path):
    from test_import import original_checkpoint

    src = tmp_path / "plain.tar"
    original_checkpoint(src, n_res_blocks=2)
    res = run_cli("import", src, "-o", tmp_path / "ok.safetensors")
    assert res.returncode == 0, res.stderr


def test_a_weights_file_with_compressed_zip_entries_is_refused_before_it_is_unpacked(tmp_path, monkeypatch):
    """A few-KB .pth of zeros, recompressed: torch.save never compresses, so such a file is refused without reading
    a tensor (it would expand to far more than its size); the same file stored plainly still loads."""
    import zipfile

    from dsgan_cli.plumbing.errors import DsganError
    from dsgan_cli.plumbing.tensor_files import load_weights_file

    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(256, 256)}, plain)
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < plain.stat().st_size / 10
    assert load_weights_file(plain, "weights")["w"].shape == (256, 256)

    def no_load(*a, **k):
        raise AssertionError("torch.load ran on a file with compressed entries")

    monkeypatch.setattr(torch, "load", no_load)
    with pytest.raises(DsganError, match="compressed entries") as e:
        load_weights_file(bomb, "weights")
    assert str(bomb) in str(e.value) and e.value.exit_code == 2
