"""Fault class: forged or damaged stored state: checkpoint metadata and the statistics cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from badfiles import run_cli_many
from conftest import one_line_error, write_images
from hostile_use import degrade_args

from dsgan_cli.method.models import Generator, GeneratorConfig


@pytest.mark.slow
def test_eval_cache_is_keyed_on_content_not_names_sizes_mtimes(tmp_path):
    fake, real_a, real_b = tmp_path / "fake", tmp_path / "real_a", tmp_path / "real_b"
    write_images(fake, 3, 16, seed=1)
    a = write_images(real_a, 3, 16, seed=2, suffix=".bmp")
    b = write_images(real_b, 3, 16, seed=2, noise=40, suffix=".bmp")  # BMP: same byte size whatever the pixels
    for pa, pb in zip(a, b):
        assert pa.name == pb.name and pa.stat().st_size == pb.stat().st_size
        st = pa.stat()
        os.utime(pb, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = tmp_path / "cache"
    cases = [
        ["eval", fake, real, "--no-fid", "--cache-dir", c, "--json", tmp_path / f"{n}.json", "--plot", tmp_path / f"{n}.png"]
        for n, real, c in (("a", real_a, cache), ("b", real_b, cache), ("b_clean", real_b, tmp_path / "cache2"))
    ]
    for res in run_cli_many(cases, cwd=tmp_path):
        assert res.returncode == 0, res.stderr
    rep = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b", "b_clean")}
    assert rep["b"]["real_stats_cached"] is False
    noise = {n: r["frequency"]["sets"]["real"]["noise"] for n, r in rep.items()}
    assert noise["b"] == noise["b_clean"] and abs(noise["b"] - noise["a"]) > 5, noise


def _forged(folder: Path, name: str, *, meta: dict | None = None, nan: bool = False) -> Path:
    from safetensors.torch import save as st_save

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8))
    tensors = {k: v.detach().clone().contiguous() for k, v in g.state_dict().items()}
    if nan:
        tensors["block_input.0.weight"][0, 0, 0, 0] = float("nan")
    metadata = {
        "format": "dsgan-generator/1",
        "step": "1",
        "scale": "2",
        "n_res_blocks": "1",
        "channels": "8",
        "recipe": "{}",
        **(meta or {}),
    }
    path = folder / name
    path.write_bytes(st_save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "name, meta, nan, must",
    [
        ("neg_scale", {"scale": "-2"}, False, "scale=-2"),
        ("huge_blocks", {"n_res_blocks": "50000000"}, False, "n_res_blocks=50000000"),
        ("huge_channels", {"channels": "2000000"}, False, "channels=2000000"),
        ("nan_weights", None, True, "not finite"),
    ],
)
@pytest.mark.slow
def test_hostile_checkpoint_metadata_is_refused_before_building(tmp_path, name, meta, nan, must):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    ckpt = _forged(tmp_path, f"{name}.safetensors", meta=meta, nan=nan)
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", ckpt)], timeout=120)
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(ckpt), must)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing_array", "wrong_shape", "nan"])
def test_a_damaged_statistics_cache_entry_is_recomputed_not_used(tmp_path, damage):
    from safetensors.numpy import load_file, save_file

    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 16, seed=1)
    write_images(real, 3, 16, seed=2, noise=20)
    cache = tmp_path / "cache"

    def run(name):
        (res,) = run_cli_many(
            [
                [
                    "eval",
                    fake,
                    real,
                    "--no-fid",
                    "--cache-dir",
                    cache,
                    "--json",
                    tmp_path / f"{name}.json",
                    "--plot",
                    tmp_path / f"{name}.png",
                ]
            ],
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        return json.loads((tmp_path / f"{name}.json").read_text())

    first = run("first")
    entries = sorted(cache.glob("frequency-*.safetensors"))
    assert entries
    for entry in entries:
        arrays = load_file(str(entry))
        if damage == "missing_array":
            del arrays["noise_std"]
        elif damage == "wrong_shape":
            arrays["spectrum"] = arrays["spectrum"][:3].reshape(1, 3)
        else:
            arrays["noise"] = np.array([np.nan])
        save_file(arrays, str(entry))
    again = run("again")
    assert again["real_stats_cached"] is False
    assert again["frequency"]["sets"] == first["frequency"]["sets"]
