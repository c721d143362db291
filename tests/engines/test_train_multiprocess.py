"""A real 2-process training on CPU (torchrun; Accelerate picks the gloo backend)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO, TINY_RECIPE, write_images
from safetensors.torch import load_file
from train_rank_weights import weights_hash


@pytest.mark.slow
def test_two_cpu_processes_train_in_sync(tmp_path):
    write_images(tmp_path / "hr", 8, 16, seed=0)
    write_images(tmp_path / "lr", 8, 8, seed=1, noise=12)
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    sets = [
        "data.hr_size=16",
        "data.lr_size=8",
        "train.batch_size=2",
        "train.iterations=2",
        "train.grad_accum=2",
        "train.checkpoint_every=2",
        f"data.hr_dir={tmp_path / 'hr'}",
        f"data.lr_dir={tmp_path / 'lr'}",
        f"train.output_dir={out}",
        "loss.w_perceptual=0",
        f"data.cache_dir={tmp_path / 'cache'}",
        # G's global structure (a learned blur, the grain's colour mix) is synchronised like every other weight
        "model.output=residual",
        "model.output_noise=true",
        "model.noise_mix=true",
        "model.blur_kernel=3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSGAN_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "train_rank_weights.py"),
        str(hashes),
        "train",
        str(TINY_RECIPE),
        "--no-progress",
    ]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    # every rank ended with the same G and the same D, and they are the exported / checkpointed ones
    rank_hashes = {p.name: p.read_text() for p in hashes.iterdir()}
    assert sorted(rank_hashes) == [f"rank{r}_{n}.sha256" for r in (0, 1) for n in ("discriminator", "generator")]
    for net in ("generator", "discriminator"):
        assert rank_hashes[f"rank0_{net}.sha256"] == rank_hashes[f"rank1_{net}.sha256"], (
            f"the two ranks ended with different {net} weights: gradients are not synchronised across processes"
        )
    assert weights_hash(load_file(out / "generator.safetensors")) == rank_hashes["rank0_generator.sha256"]
    d_saved = load_file(out / "checkpoints" / "step_00000002" / "model_1.safetensors")
    d_params = {k: v for k, v in d_saved.items() if "running_" not in k and "num_batches" not in k}
    assert weights_hash(d_params) == rank_hashes["rank0_discriminator.sha256"], "the checkpoint's D is not the trained D"

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
    assert res.stdout.count("learned:    blur sd") == 1 and "grain colour correlation" in res.stdout

    # one process decoded each set into the one shared cache; the other mapped it
    assert res.stderr.count("decoded 8 HR images into the cache") == 1
    assert res.stderr.count("decoded 8 real LR images into the cache") == 1
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 2 and not list((tmp_path / "cache").glob("*.partial"))


@pytest.mark.slow
def test_an_error_under_accelerate_launch_quiet_ends_with_dsgans_own_line(tmp_path):
    """`accelerate launch -q`: dsgan's one-line error is what the user reads, without accelerate's
    CalledProcessError traceback (which it prints without -q)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSGAN_OFFLINE": "1"}
    launch = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"),
        "launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    res = subprocess.run(
        [*launch, "-q", "-m", "dsgan_cli", "train", "no_such_recipe"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("error: no_such_recipe: recipe file not found, and not a built-in recipe ("), (
        res.stderr
    )
    assert "Traceback" not in res.stderr and "CalledProcessError" not in res.stderr, res.stderr
    # Without -q accelerate adds its own traceback after dsgan's line: the reason the docs say -q.
    res = subprocess.run(
        [*launch, "-m", "dsgan_cli", "train", "no_such_recipe"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert "error: no_such_recipe: recipe file not found" in res.stderr and "CalledProcessError" in res.stderr
