"""Fault injection: SIGKILL at bad moments, then the same command again.

Promises checked: outputs are atomic (complete and decodable, or absent),
re-running finishes the job with nothing duplicated or missing, and training
resumes from the last complete checkpoint after a kill during a checkpoint
write.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from badfiles import Zygote, tree_digest
from conftest import TINY_RECIPE, run_cli, write_images
from PIL import Image

from dsgan_cli.data.images import list_images


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """One process that imports torch once and forks every CLI run (each one killable on its own)."""
    z = Zygote(tmp_path_factory.mktemp("logs"))
    yield z
    z.close()


def wait_until(cond, child, timeout: float) -> bool:
    """Poll ``cond()`` until true; False when the run ended first. ``timeout`` only guards against a hang."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if child.done():
            return cond()
        time.sleep(0.01)
    return False


#: Run in the forked child before the real CLI, with one test-only change: the Nth rename of a finished
#: output whose name ends in PAUSE_SUFFIX writes a marker file and stops the whole process (SIGSTOP),
#: just before that rename (PAUSE_WHEN=before: the output exists only as its hidden temporary) or just
#: after it (PAUSE_WHEN=after). The run cannot get past that point, so the test's SIGKILL lands exactly
#: there on any machine, fast or slow.
_PAUSE_AT_NTH_RENAME = r"""
import os, signal, threading
from pathlib import Path
marker, suffix = Path(os.environ["PAUSE_MARKER"]), os.environ["PAUSE_SUFFIX"]
nth, when = int(os.environ["PAUSE_NTH"]), os.environ["PAUSE_WHEN"]
real_replace, seen = os.replace, []
def pause():
    marker.write_text("paused")
    # Sent to this very thread, the stop takes hold before it returns; the other threads follow.
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
def pausing_replace(src, dst, *args, **kwargs):
    ours = str(dst).endswith(suffix) and not Path(dst).name.startswith(".")
    if ours:
        seen.append(dst)
    if ours and len(seen) == nth and when == "before":
        pause()
    result = real_replace(src, dst, *args, **kwargs)
    if ours and len(seen) == nth and when == "after":
        pause()
    return result
os.replace = pausing_replace
"""


def kill_at_pause(zygote, args: list, marker: Path, prelude: str, **env: str) -> None:
    """Start a run that pauses itself at a hook, wait until it is stopped there, then SIGKILL it."""
    child = zygote.start(args, env={"PAUSE_MARKER": str(marker), **env}, prelude=prelude)
    reached = wait_until(lambda: marker.exists() and child.stopped(), child, timeout=300)
    assert reached, child.wait().stderr[-3000:] if child.done() else "the run did not reach its pause point"
    assert child.kill9().returncode == -9


def kill_at_nth_output(zygote, args: list, marker: Path, nth: int, when: str, suffix: str = ".png") -> None:
    """SIGKILL a run just before or just after its ``nth`` output file is renamed into place."""
    kill_at_pause(zygote, args, marker, _PAUSE_AT_NTH_RENAME, PAUSE_SUFFIX=suffix, PAUSE_NTH=str(nth), PAUSE_WHEN=when)


# ----------------------------------------------------------------------------- degrade


@pytest.fixture(scope="module")
def degrade_setup(tmp_path_factory):
    """Input tree (two folders, mixed sizes) and a small generator."""
    from dsgan_cli.engines.checkpoint import save_generator
    from dsgan_cli.method.models import Generator, GeneratorConfig

    root = tmp_path_factory.mktemp("fault_degrade")
    inp = root / "in"
    write_images(inp / "a", 6, 48, seed=1)
    write_images(inp / "b b", 4, 32, seed=2)
    torch.manual_seed(0)
    ckpt = root / "generator.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=2, channels=16)), ckpt, step=1, scale=2)
    return root, inp, ckpt


def outputs(out: Path) -> list[Path]:
    return list_images(out) if out.exists() else []


@pytest.mark.slow
def test_degrade_kill9_then_rerun_completes_exactly(degrade_setup, zygote, tmp_path):
    root, inp, ckpt = degrade_setup
    before = tree_digest(inp)
    out = tmp_path / "out"
    # With one image per batch and one encoder thread, outputs are renamed into place in input order.
    expected = [out / p.relative_to(inp).with_suffix(".png") for p in list_images(inp)]
    args = ["degrade", inp, out, "--checkpoint", ckpt, "--no-progress", "--batch-size", "1", "--json"]

    # Killed just before the 4th output's rename: 3 complete outputs and the 4th one's temporary.
    kill_at_nth_output(zygote, args, tmp_path / "paused1", nth=4, when="before")
    assert outputs(out) == expected[:3], "a kill left outputs other than the completed ones"
    assert [p.name for p in expected[3].parent.glob(f".{expected[3].name}.*.partial")], "no temporary at the kill point"
    # Killed again just after the 2nd new output's rename: the 3 outputs are skipped, 2 more are complete.
    kill_at_nth_output(zygote, args, tmp_path / "paused2", nth=2, when="after")
    assert outputs(out) == expected[:5]
    for p in outputs(out):  # whatever is visible after a kill is complete
        Image.open(p).load()

    res = run_cli(*args)  # the real `python -m dsgan_cli` for the rerun
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["failed"] == []
    assert (summary["skipped"], summary["written"]) == (5, len(expected) - 5)
    assert outputs(out) == sorted(expected)  # none missing, none extra, none duplicated
    # Same pixels as one uninterrupted run.
    ref = tmp_path / "ref"
    res = zygote.run(["degrade", inp, ref, "--checkpoint", ckpt, "--no-progress", "--batch-size", "1"])
    assert res.returncode == 0, res.stderr
    for p in expected:
        a = np.asarray(Image.open(p))
        b = np.asarray(Image.open(ref / p.relative_to(out)))
        assert a.shape == b.shape and np.array_equal(a, b), p
    leftovers = [p for p in out.rglob("*") if p.is_file() and p not in expected]
    # The output record and the folder's lock are the only files besides the images; no temporary of a killed
    # run is left.
    leftovers = [p for p in leftovers if p.name not in (".dsgan-degrade.json", ".dsgan.lock")]
    assert leftovers == [], f"temporaries of killed runs were not cleaned up: {leftovers}"
    assert tree_digest(inp) == before


# ----------------------------------------------------------------------------- train

#: Run in the forked child before the real CLI, with one test-only change: the Nth generator export into a
#: hidden ``.partial`` checkpoint folder writes a marker file and stops the process (SIGSTOP), so the
#: test's SIGKILL lands while that checkpoint is being written.
_PAUSE_IN_CHECKPOINT = r"""
import os, signal, threading
from pathlib import Path
import dsgan_cli.engines.rundir as rundir_mod
marker, nth = Path(os.environ["PAUSE_MARKER"]), int(os.environ["PAUSE_NTH"])
real_save, calls = rundir_mod.save_generator, []
def pausing_save(g, path, **kw):
    if Path(path).parent.name.endswith(".partial"):
        calls.append(path)
        if len(calls) == nth:
            marker.write_text(str(path))
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
    return real_save(g, path, **kw)
rundir_mod.save_generator = pausing_save
"""


def train_args(run: Path, data: Path, iterations: int) -> list[str]:
    return [
        "train",
        str(TINY_RECIPE),
        "--no-progress",
        "--set",
        f"data.hr_dir={data / 'hr'}",
        "--set",
        f"data.lr_dir={data / 'lr'}",
        "--set",
        f"train.output_dir={run}",
        "--set",
        f"train.iterations={iterations}",
        "--set",
        "train.sample_every=100",
        # No VGG: this test is about checkpoints, and building VGG19 dominates a tiny run's time.
        "--set",
        "loss.w_perceptual=0",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.keep_last=2",
    ]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("fault_train")
    write_images(data / "hr", 8, 32, seed=4)
    write_images(data / "lr", 8, 16, seed=5, noise=8)
    return data


def ckpt_steps(run: Path) -> list[str]:
    root = run / "checkpoints"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.slow
def test_train_kill9_during_checkpoint_write_then_resume_latest(train_data, zygote, tmp_path):
    from dsgan_cli.engines.checkpoint import load_generator

    run = tmp_path / "run"
    args = train_args(run, train_data, iterations=3)
    kill_at_pause(zygote, args, tmp_path / "in_checkpoint", _PAUSE_IN_CHECKPOINT, PAUSE_NTH="2")  # the step-2 checkpoint

    # The kill landed inside the step-2 checkpoint: it must not look complete.
    names = ckpt_steps(run)
    assert "step_00000001" in names and "step_00000002" not in names, names
    assert any(n.startswith(".step_00000002") for n in names), names
    from dsgan_cli.engines.rundir import complete_checkpoints

    assert [s for s, _ in complete_checkpoints(run / "checkpoints")] == [1]
    _, meta = load_generator(run / "generator.safetensors")  # the exported file is intact (step 1)
    assert meta["step"] == 1

    res = run_cli(*args, "--resume", "latest")
    assert res.returncode == 0, res.stderr
    assert "step 1" in (res.stdout + res.stderr)
    steps = [s for s, _ in complete_checkpoints(run / "checkpoints")]
    assert steps == [2, 3]
    g, meta = load_generator(run / "generator.safetensors")
    assert meta["step"] == 3
    assert all(torch.isfinite(p).all() for p in g.state_dict().values())
    assert not [n for n in ckpt_steps(run) if n.endswith(".partial")], ckpt_steps(run)

    # Resuming after the kill gives the same weights as one uninterrupted run.
    straight = tmp_path / "straight"
    res = zygote.run(train_args(straight, train_data, iterations=3))
    assert res.returncode == 0, res.stderr
    g2, _ = load_generator(straight / "generator.safetensors")
    for (k, a), b in zip(g.state_dict().items(), g2.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


# ----------------------------------------------------------------------------- prepare


@pytest.mark.slow
def test_prepare_kill9_then_rerun_matches_one_uninterrupted_run(zygote, tmp_path):
    skdata = pytest.importorskip("skimage.data")
    from badfiles import make_bad_images

    raw = tmp_path / "raw"
    raw.mkdir()
    astro = Image.fromarray(skdata.astronaut())
    for i in range(8):  # distinct photos: rotated and rescaled portraits
        img = astro.rotate(4 * i - 14, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
        img.resize((200 + 16 * i,) * 2, Image.Resampling.LANCZOS).save(raw / f"face {i:02d}.png")
    make_bad_images(raw / "bad")
    before = tree_digest(raw)
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ["prepare", raw, "--size", "64", "--workers", "1", "--no-progress"]

    # Killed just after the 3rd crop is renamed into place, before the manifest exists.
    kill_at_nth_output(zygote, [*args, "--out", out], tmp_path / "paused", nth=3, when="after")
    assert len(list(out.glob("*.png"))) == 3
    assert not (out / "manifest.jsonl").exists()  # written only at the end, atomically
    for p in out.glob("*.png"):
        Image.open(p).load()  # every visible crop is complete

    resumed = run_cli(*args, "--out", out)
    assert resumed.returncode == 1, resumed.stderr  # unreadable inputs
    straight = zygote.run([*args, "--out", ref])
    assert straight.returncode == 1, straight.stderr

    def records(folder):
        return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]

    assert records(out) == records(ref)
    assert tree_digest(out) == tree_digest(ref)  # same crops, byte for byte, and no leftovers
    assert tree_digest(raw) == before
