"""The ``make demo`` pipeline: data from scikit-image photographs, train, degrade, eval, report.

The full demo takes minutes; here it runs with ``--quick`` (tiny images, a
few steps) so CI guards every step and the report layout. Whether the
degradation is learned is asserted by the slow test in ``test_learning.py``
(the demo with ``--require-learning``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dsgan_cli.commands import demo


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``dsgan demo ARGS`` (as ``python -m dsgan_cli demo ARGS``) in a subprocess, offline."""
    # One thread: tiny tensors gain nothing from two, and on a busy machine idle OpenMP threads spin.
    env = dict(os.environ, OMP_NUM_THREADS="1", DSGAN_OFFLINE="1")
    env.pop("DSGAN_INCEPTION_WEIGHTS", None)
    return subprocess.run([sys.executable, "-m", "dsgan_cli", "demo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_quick_demo_writes_report_and_numbers(tmp_path):
    out = tmp_path / "demo out"
    proc = run_demo("--quick", "--out", str(out), cwd=tmp_path)  # piped: no terminal
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Piped, progress still shows: plain lines (never a bar), the first one right after the first step
    # with its rate and ETA, not after a timer, so a slow first step cannot leave a log silent.
    lines = proc.stderr.splitlines()
    first = next((ln for ln in lines if ln.startswith("train: 1/")), None)
    assert first is not None and " it/s" in first and "ETA" in first, proc.stderr[-3000:]
    assert any("s/step (first step, with warm-up): about" in ln for ln in lines), proc.stderr[-3000:]
    assert any(ln.startswith("degrading: 1/") for ln in lines), proc.stderr[-3000:]
    assert "\x1b[" not in proc.stderr and "━" not in proc.stderr, "bar frames reached a pipe"

    report = out / "report"
    for name in ("samples.png", "losses.png", "spectrum.png", "summary.json"):
        assert (report / name).is_file(), f"missing {name}"
    for name in ("samples.png", "losses.png", "spectrum.png"):
        with Image.open(report / name) as im:
            assert im.width > 50 and im.height > 50

    summary = json.loads((report / "summary.json").read_text())
    assert summary["ok"] is True and summary["mode"] == "quick"
    assert isinstance(summary["learned"], bool)
    for key in ("Xb", "Xd", "real LR"):
        assert math.isfinite(summary["noise"][key]) and summary["noise"][key] >= 0
        assert math.isfinite(summary["spectral_distance"][key]) and summary["spectral_distance"][key] >= 0
    # The real LR set is its own reference.
    assert summary["spectral_distance"]["real LR"] == pytest.approx(0.0, abs=1e-9)
    assert summary["counts"]["held_out"] == demo.QUICK_SPEC.n_holdout
    assert [s["step"] for s in summary["steps"] if not s["ok"]] == []

    # Same code paths as a user: a generator file, degraded held-out images at LR size.
    assert Path(summary["train"]["generator"]).is_file()
    xd = sorted((out / "holdout_xd").rglob("*.png"))
    assert len(xd) == demo.QUICK_SPEC.n_holdout
    with Image.open(xd[0]) as im:
        assert im.size == (demo.QUICK_SPEC.hr_size // 2,) * 2

    # Offline, without cached VGG19 the demo says it uses random features.
    said = " ".join(proc.stdout.split())  # undo the console's line wrapping
    if not demo.vgg_cache_path().is_file():
        assert summary["perceptual_weights"] == "random"
        assert "RANDOM VGG19 features" in said
    assert "grain in flat regions" in said and "colour shift" in said
    assert ("NOT learned" in said) == (not summary["learned"])
    # The verdict is the downstream one: SR trained on DSGAN pairs vs on bicubic pairs, on held-out real LR.
    checks = summary["verdict"]["checks"]
    assert set(checks) == {"grain", "colour", "border", "spectrum"}
    sr = summary["sr"]
    assert sr["gain_db"] == pytest.approx(sr["psnr_sr_dsgan_pairs"] - sr["psnr_sr_bicubic_pairs"])
    assert summary["learned"] == (sr["gain_db"] >= sr["gain_min_db"])
    assert len(sr["photos"]) == demo.QUICK_SPEC.n_holdout and all(10 < p["psnr_sr_dsgan_pairs"] < 60 for p in sr["photos"])
    assert sr["psnr_sr_bicubic_pairs"] == pytest.approx(np.mean([p["psnr_sr_bicubic_pairs"] for p in sr["photos"]]))
    pictures = sorted((report / "sr").glob("*.png"))
    assert [p.stem for p in pictures] == sorted(p["photo"] for p in sr["photos"])
    with Image.open(pictures[0]) as im:  # real LR | SR bicubic | SR DSGAN | HR, side by side
        assert im.width > 4 * demo.QUICK_SPEC.hr_size and im.height > demo.QUICK_SPEC.hr_size
    # pairs were written through the pairs code path
    assert len(list((out / "pairs" / "lr").glob("*.png"))) == demo.QUICK_SPEC.n_hr
    assert summary["paired"]["images"] == demo.QUICK_SPEC.n_holdout
    # The default recipe is the built-in one, read from the package.
    assert Path(summary["recipe_file"]) == Path(demo.__file__).parents[2] / "recipes" / "idphoto.toml"


def test_data_is_reused_and_sets_are_disjoint(tmp_path):
    spec = demo.QUICK_SPEC
    messages: list[str] = []
    manifest = demo.build_data(tmp_path / "data", spec, messages.append)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*.png")}
    assert len(first) == spec.n_hr + spec.n_lr + spec.n_holdout

    again = demo.build_data(tmp_path / "data", spec, messages.append)
    assert again == manifest and messages[-1].startswith("Reusing")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("*.png")} == first

    # Unpaired: no photograph gives both HR and real LR patches; held-out photos are never HR inputs.
    src = manifest["sources"]
    assert not set(src["hr"]) & set(src["lr_real"])
    assert not set(src["holdout_hr"]) & set(src["hr"])
    with Image.open(next((tmp_path / "data" / "lr_real").glob("*.png"))) as im:
        assert im.size == (spec.lr_size, spec.lr_size)

    # A lost image makes the set incomplete: it is rebuilt, not trusted.
    next((tmp_path / "data" / "hr").glob("*.png")).unlink()
    demo.build_data(tmp_path / "data", spec, messages.append)
    assert messages[-1].startswith("Building")
    assert len(list((tmp_path / "data" / "hr").glob("*.png"))) == spec.n_hr


def test_real_degradation_adds_high_frequencies():
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 190, 32)
    clean = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).round().astype(np.uint8)  # smooth: no high frequencies
    degraded = demo.DataSpec(noise_sigma=12.0, jpeg_quality=80).degrade(clean, rng)

    def laplacian_energy(a: np.ndarray) -> float:
        g = a.astype(np.float64).mean(axis=2)
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        return float(np.mean(lap**2))

    assert degraded.shape == clean.shape and degraded.dtype == np.uint8
    assert laplacian_energy(degraded) > 10 * max(laplacian_energy(clean), 1.0)
    # Low frequencies stay: the mean colour barely moves.
    assert abs(degraded.mean() - clean.mean()) < 2


@pytest.mark.slow
def test_refuses_a_foreign_non_empty_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = run_demo("--quick", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2
    assert "not made by the demo" in proc.stdout + proc.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "data").exists()


def test_demo_folder_may_hold_the_quick_demo_folder(tmp_path):
    quick = tmp_path / "demo_output" / "quick"
    demo.prepare_out_dir(quick)  # `--quick` alone makes demo_output/quick first
    demo.prepare_out_dir(tmp_path / "demo_output")  # then the full demo may use demo_output
    assert (tmp_path / "demo_output" / demo.MARKER).is_file() and (quick / demo.MARKER).is_file()
    (tmp_path / "demo_output" / "stray.txt").write_text("x")
    (quick / demo.MARKER).unlink()
    (tmp_path / "demo_output" / demo.MARKER).unlink()
    with pytest.raises(demo.DsganError, match="not made by the demo"):
        demo.prepare_out_dir(tmp_path / "demo_output")


@pytest.mark.slow
def test_a_failed_step_exits_with_its_code_in_one_line_and_is_recorded(tmp_path):
    out = tmp_path / "demo"
    proc = run_demo("--quick", "--out", str(out), "--no-progress", "--recipe", "no_such_recipe", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["error: no_such_recipe: recipe file not found, and not a built-in recipe (idphoto, paper)"]
    failed = json.loads((out / "failed.json").read_text())
    assert failed["ok"] is False and [s["step"] for s in failed["steps"]] == ["recipe"]
    assert failed["steps"][0]["ok"] is False and "no_such_recipe" in failed["steps"][0]["error"]
    assert not (out / "data").exists() and not (out / "report" / "summary.json").exists()


@pytest.mark.slow
def test_recipe_option_takes_a_file(tmp_path):
    """``--recipe FILE``: a broken recipe file fails the recipe step, naming the file (exit 2)."""
    broken = tmp_path / "broken.toml"
    broken.write_text('[model]\nfilter = "median"\n')
    proc = run_demo("--quick", "--out", str(tmp_path / "demo"), "--no-progress", "--recipe", str(broken), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}") and "model.filter" in lines[0], lines


def test_ctrl_c_in_the_demo_says_how_to_go_on():
    from dsgan_cli.cli import interrupted_message

    assert interrupted_message(["demo", "--quick"]).startswith("interrupted: demo stopped;")
    assert "run the same command again" in interrupted_message(["--debug", "demo"])
