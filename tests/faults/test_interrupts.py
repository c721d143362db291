"""Fault class: runs interrupted by Ctrl-C (SIGINT): what the message says stopped and how to resume."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_images


@pytest.mark.parametrize(
    "command, hint",
    [("degrade", "run the same command again"), ("pairs", "run the same command again"), ("train", "run the same command again")],
)
@pytest.mark.slow
def test_ctrl_c_says_what_stopped_and_how_to_resume(tmp_path, gens, tiny_recipe, command, hint):
    """A real SIGINT, delivered at a fixed point of the run (the start of the work), not at a random time."""
    inp = tmp_path / "in"
    write_images(inp, 2, 16)
    write_images(tmp_path / "lr", 2, 8, seed=3)
    if command in ("degrade", "pairs"):
        argv = [command, inp, tmp_path / "out", "--checkpoint", gens["g1"], "--no-progress"]
        hook = "import dsgan_cli.engines.inference as m; name = 'process_jobs'"
    else:
        argv = [
            "train",
            tiny_recipe,
            "--no-progress",
            "--set",
            f"data.hr_dir={inp}",
            "--set",
            f"data.lr_dir={tmp_path / 'lr'}",
            "--set",
            f"train.output_dir={tmp_path / 'run'}",
            "--set",
            "loss.w_perceptual=0",
        ]
        hook = "import dsgan_cli.engines.train as m; name = 'load_data'"
    # A shell started in the background ignores SIGINT for its children; a terminal's foreground job does not.
    code = (
        f"import os, signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n{hook}\n"
        "orig = getattr(m, name)\n"
        "def hooked(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return orig(*a, **k)\n"
        "setattr(m, name, hooked)\nfrom dsgan_cli.cli import main\nmain(sys.argv[1:])\n"
    )
    env = dict(os.environ, DSGAN_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 130, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and command in lines[0] and hint in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_ctrl_c_before_training_began_claims_no_checkpoint():
    from dsgan_cli.cli import interrupted_message

    hint = interrupted_message(["train", "--set", "a.b=1", "learn", "--no-progress"])
    assert "before its first step" in hint and "checkpoint" not in hint and "--resume" not in hint
