"""Fault class: trainings that share, lose (killed) or resume a run folder: the lock, lineage and resume checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from badfiles import run_cli_many
from conftest import one_line_error
from hostile_use import train_args
from PIL import Image


@pytest.fixture
def zygote(tmp_path):
    from badfiles import Zygote

    z = Zygote(tmp_path / "zlogs")
    yield z
    z.close()


def _wait_for(path: Path, child) -> bool:
    """Poll until ``path`` exists; False when the child ended first (no time limit: the child's own progress decides)."""
    import time

    while not path.exists():
        if child.done():
            return path.exists()
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_second_training_in_a_busy_run_folder_is_refused(tmp_path, tiny_recipe, train_data, zygote):
    hr, lr = train_data
    out = tmp_path / "run"
    ready, go = tmp_path / "ready", tmp_path / "go"
    # The first run pauses right after taking the folder (a file handshake, no timing).
    prelude = (
        f"import pathlib, time, dsgan_cli.engines.train as t\norig = t.start_run\n"
        f"def held(*a, **k):\n    d = orig(*a, **k)\n    pathlib.Path({str(ready)!r}).touch()\n"
        f"    while not pathlib.Path({str(go)!r}).exists():\n        time.sleep(0.02)\n    return d\n"
        "t.start_run = held\n"
    )
    first = zygote.start(train_args(tiny_recipe, hr, lr, out, "train.iterations=2"), prelude=prelude)
    assert _wait_for(ready, first), first.wait().stderr
    (second,) = run_cli_many([train_args(tiny_recipe, hr, lr, out, "train.iterations=2")], cwd=tmp_path)
    go.touch()
    done = first.wait()
    assert second.returncode == 2, second.stderr
    one_line_error(second.stderr, str(out), "another training is running")
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoints" / "step_00000002").is_dir()


@pytest.mark.slow
def test_lock_of_a_killed_training_is_released(tmp_path, tiny_recipe, train_data, zygote):
    hr, lr = train_data
    out = tmp_path / "run"
    prelude = (
        "import os, signal, dsgan_cli.engines.train as t\norig = t.start_run\n"
        "def die(*a, **k):\n    orig(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.start_run = die\n"
    )
    killed = zygote.run(train_args(tiny_recipe, hr, lr, out, "train.iterations=1"), prelude=prelude)
    assert killed.returncode == -9
    (again,) = run_cli_many([train_args(tiny_recipe, hr, lr, out, "train.iterations=1")], cwd=tmp_path)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_resume_latest_follows_the_resumed_branch(tmp_path, tiny_recipe, train_data):
    hr, lr = train_data
    out = tmp_path / "run"
    base = train_args(tiny_recipe, hr, lr, out, "train.checkpoint_every=1", "train.keep_last=10")
    first, branch, latest = run_cli_many(
        [
            [*base, "--set", "train.iterations=4"],
            [*base, "--set", "train.iterations=3", "--resume", out / "checkpoints" / "step_00000002"],
            [*base, "--set", "train.iterations=5", "--resume", "latest"],
        ],
        cwd=tmp_path,
        timeout=1200,
    )
    for res in (first, branch, latest):
        assert res.returncode == 0, res.stderr
    assert "step_00000003" in latest.stdout and "step_00000004" not in latest.stdout, latest.stdout
    aside = out / "abandoned" / "after_step_00000002" / "step_00000004"
    assert (aside / "trainer_state.json").is_file()  # moved aside, not deleted
    assert str(out / "abandoned") in branch.stderr


@pytest.mark.slow
def test_resume_refuses_changed_model_or_data_and_keeps_the_first_recipe(tmp_path, tiny_recipe, train_data):
    hr, lr = train_data
    out = tmp_path / "run"
    base = train_args(tiny_recipe, hr, lr, out, "train.checkpoint_every=1")
    (first,) = run_cli_many([[*base, "--set", "train.iterations=2"]], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    recipe_before = (out / "recipe.json").read_bytes()
    flip, crop, soft = run_cli_many(
        [
            [*base, "--set", "train.iterations=3", "--set", "data.flip=true", "--resume", "latest"],
            [*base, "--set", "train.iterations=3", "--set", "data.crop_size=8", "--resume", "latest"],
            [*base, "--set", "train.iterations=3", "--set", "train.log_every=2", "--resume", "latest"],
        ],
        cwd=tmp_path,
    )
    for res, key in ((flip, "data.flip"), (crop, "data.crop_size")):
        assert res.returncode == 2, res.stderr
        one_line_error(res.stderr, "cannot resume exactly", key)
    assert soft.returncode == 0, soft.stderr
    assert "warning: resuming with changed" in soft.stderr and "train.log_every" in soft.stderr
    assert (out / "recipe.json").read_bytes() == recipe_before
    # Same recipe, other pixels in one HR image: the data changed.
    img = np.asarray(Image.open(hr / "img_000.png")).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(hr / "img_000.png")
    (data,) = run_cli_many([[*base, "--set", "train.iterations=4", "--resume", "latest"]], cwd=tmp_path)
    assert data.returncode == 2, data.stderr
    one_line_error(data.stderr, "cannot resume exactly", "images")


def test_a_key_the_checkpoints_recipe_lacks_compares_at_its_default(tmp_path):
    """A checkpoint from a version before an option ran with the option's default: resuming with another value is
    a change (refused for a model key), with the default it is none."""
    import json

    from dsgan_cli.engines.rundir import check_resume
    from dsgan_cli.method.recipe import Recipe
    from dsgan_cli.plumbing.errors import DsganError

    before = Recipe().to_dict()
    before["model"]["blur_kernel"] = 9
    del before["model"]["blur_source"]  # written before the option existed
    (tmp_path / "recipe.json").write_text(json.dumps(before))
    now = json.loads(json.dumps(before))
    now["model"]["blur_source"] = "read"
    with pytest.raises(DsganError, match="cannot resume exactly: model.blur_source 'gan' -> 'read'"):
        check_resume(tmp_path, now, {}, {})
    now["model"]["blur_source"] = "gan"
    check_resume(tmp_path, now, {}, {})
