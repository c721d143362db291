"""Fault class: bad values and unwritable targets, refused as usage errors before any work and creating nothing."""

from __future__ import annotations

import pytest
from badfiles import run_cli_many, tree_digest
from conftest import one_line_error, write_images
from hostile_use import degrade_args, train_args

H_RECIPE_CASES = [
    ("optim.beta1=1.0", "optim.beta1"),
    ("optim.beta2=1.0", "optim.beta2"),
    ("train.seed=4294967296", "train.seed"),
    ("model.filter_kernel=41", "model.filter_kernel"),
    ("data.crop_size=2", "model.filter_kernel"),
    ("optim.lr=inf", "optim.lr"),
    ("loss.w_gan=inf", "loss.w_gan"),
    ('train.output_dir=""', "train.output_dir"),
]


@pytest.mark.slow
def test_bad_recipe_values_exit_2_before_training(tmp_path, tiny_recipe):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    work = tmp_path / "work"
    work.mkdir()
    before = tree_digest(tmp_path)
    base = [
        "train",
        tiny_recipe,
        "--no-progress",
        "--set",
        f"data.hr_dir={hr}",
        "--set",
        f"data.lr_dir={lr}",
        "--set",
        "train.iterations=1",
        "--set",
        "train.batch_size=2",
        "--set",
        "loss.w_perceptual=0",
    ]
    cases = [
        [*base, "--set", f"train.output_dir={tmp_path / 'runs' / str(i)}", "--set", override]
        for i, (override, _) in enumerate(H_RECIPE_CASES)
    ]
    for (override, key), res in zip(H_RECIPE_CASES, run_cli_many(cases, cwd=work)):
        assert res.returncode == 2, (override, res.stderr[-2000:])
        one_line_error(res.stderr, key)
    assert tree_digest(tmp_path) == before  # no run folder, nothing in the current folder


@pytest.mark.slow
def test_prepare_margin_nan_is_a_usage_error(tmp_path):
    raw = tmp_path / "raw"
    write_images(raw, 1, 16)
    (res,) = run_cli_many([["prepare", raw, "--out", tmp_path / "out", "--margin", "nan", "--no-progress"]])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, "--margin")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_unwritable_json_fails_before_the_work(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 2, 16, seed=1)
    write_images(real, 2, 16, seed=2)
    (tmp_path / "file").write_text("a file, not a folder\n")
    target = tmp_path / "file" / "r.json"
    (res,) = run_cli_many(
        [["eval", fake, real, "--no-fid", "--json", target, "--plot", tmp_path / "p.png", "--cache-dir", tmp_path / "cache"]], cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(target))
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "cache").exists()  # nothing was computed


@pytest.mark.slow
def test_failed_usage_checks_create_nothing(tmp_path, gens, tiny_recipe, train_data):
    hr, lr = train_data
    before = tree_digest(tmp_path)
    deg, tr = run_cli_many(
        [
            degrade_args(hr, tmp_path / "out", gens["g1"], "--batch-size", "0"),
            train_args(tiny_recipe, hr, lr, tmp_path / "run", "loss.w_perceptual=0.01", "perceptual.weights=torchvision"),
        ],
        cwd=tmp_path,
    )
    assert deg.returncode == 2, deg.stderr
    one_line_error(deg.stderr, "--batch-size")
    assert tr.returncode == 2, tr.stderr
    one_line_error(tr.stderr, "VGG19")
    assert tree_digest(tmp_path) == before  # no output folder, no run folder, no logs/
