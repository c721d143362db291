"""A real 2-process training on CPU (torchrun; Accelerate picks the gloo backend)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from conftest import TINY_RECIPE, write_images


def weights_hash(tensors: dict) -> str:
    """Same hash as dsgan_cli.train._dump_rank_hash: sorted names + float32 bytes."""
    h = hashlib.sha256()
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.float().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_two_cpu_processes_train_in_sync(tmp_path):
    write_images(tmp_path / "hr", 8, 16, seed=0)
    write_images(tmp_path / "lr", 8, 8, seed=1, noise=12)
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    sets = ["data.hr_size=16", "data.lr_size=8", "train.batch_size=2", "train.iterations=2", "train.grad_accum=2",
            "train.checkpoint_every=2", f"data.hr_dir={tmp_path / 'hr'}", f"data.lr_dir={tmp_path / 'lr'}",
            f"train.output_dir={out}", "loss.w_perceptual=0", f"data.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSGAN_OFFLINE": "1", "DSGAN_TEST_RANK_HASH_DIR": str(hashes)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dsgan_cli", "train", str(TINY_RECIPE), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    # every rank ended with the same G and the same D weights (no buffer broadcast), and G is the exported one
    rank_hashes = {p.name: p.read_text() for p in hashes.iterdir()}
    assert sorted(rank_hashes) == ["rank0.D.sha256", "rank0.sha256", "rank1.D.sha256", "rank1.sha256"]
    assert rank_hashes["rank0.sha256"] == rank_hashes["rank1.sha256"]
    assert rank_hashes["rank0.D.sha256"] == rank_hashes["rank1.D.sha256"]
    assert weights_hash(load_file(out / "generator.safetensors")) == rank_hashes["rank0.sha256"]

    # exactly one checkpoint, written once, holding both ranks' RNG states
    ckpts = list((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_00000002"]
    files = sorted(p.name for p in ckpts[0].iterdir())
    assert "random_states_0.pkl" in files and "random_states_1.pkl" in files and "generator.safetensors" in files
    state = json.loads((ckpts[0] / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["micro_batches_consumed"] == 4

    # one log (main process only), finite losses
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_g", "loss_d", "loss_color", "loss_gan"))
    assert res.stdout.count("generator:") == 1

    # one process decoded each set into the one shared cache; the other mapped it
    assert res.stderr.count("decoded 8 HR images into the cache") == 1
    assert res.stderr.count("decoded 8 real LR images into the cache") == 1
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2 and not list((tmp_path / "cache").glob("*.partial"))
