"""SIGINT and SIGTERM during `dsgan train`: real signals to a real process group, one process and under
`accelerate launch` with two processes.

No timing race: each run holds after its first step (a `sitecustomize` this test puts on PYTHONPATH,
active only with DSGAN_TEST_HOLD set) until its own process got the signal, so the signal always lands
mid-run, and the step it stops after is known: step 2 (the flag is read once per step, step 1's read
is before the hold). The test waits for step 1 in metrics.jsonl and for every rank's hold marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_RECIPE, write_images

pytestmark = pytest.mark.slow

#: Test-only: the second flag read of each process (after step 1) writes a marker and waits for this
#: process's own stop signal or a "release" file; with DSGAN_TEST_HOLD=forever it keeps waiting (for a second Ctrl-C).
_HOLD = r"""
import os
if os.environ.get("DSGAN_TEST_HOLD"):
    import time
    from pathlib import Path
    import dsgan_cli.engines.interrupt as interrupt

    real_agreed, reads = interrupt.StopOnSignal.agreed, []

    def holding_agreed(self):
        reads.append(1)
        if len(reads) == 2:
            marker = Path(os.environ["DSGAN_TEST_HOLD_DIR"]) / f"rank{os.environ.get('RANK', '0')}"
            marker.write_text(str(os.getpid()))
            release = Path(os.environ["DSGAN_TEST_HOLD_DIR"]) / "release"
            while (self.signum is None and not release.exists()) or os.environ["DSGAN_TEST_HOLD"] == "forever":
                time.sleep(0.01)
        return real_agreed(self)

    interrupt.StopOnSignal.agreed = holding_agreed
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("signals")
    write_images(d / "hr", 8, 32, seed=4)
    write_images(d / "lr", 8, 16, seed=5, noise=8)
    (d / "hook").mkdir()
    (d / "hook" / "sitecustomize.py").write_text(_HOLD)
    return d


def train_args(data: Path, run: Path, workers: int = 0) -> list[str]:
    """A 4-step tiny run whose first checkpoint would come only at its end (checkpoint_every 4)."""
    sets = [
        f"data.hr_dir={data / 'hr'}",
        f"data.lr_dir={data / 'lr'}",
        f"train.output_dir={run}",
        "train.iterations=4",
        "train.checkpoint_every=4",
        "train.sample_every=100",
        "loss.w_perceptual=0",
        "train.batch_size=2",
        f"data.num_workers={workers}",
        f"data.cache_dir={data / 'cache'}",
    ]
    return ["train", str(TINY_RECIPE), "--no-progress", *[x for s in sets for x in ("--set", s)]]


def environment(data: Path, hold: str = "") -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DSGAN_OFFLINE": "1",
        # torchrun's grace period before SIGKILL: generous, so a slow machine is never cut short
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "300",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if hold:
        env.update(
            DSGAN_TEST_HOLD=hold,
            DSGAN_TEST_HOLD_DIR=str(data / "held"),
            PYTHONPATH=os.pathsep.join([str(data / "hook"), str(REPO), os.environ.get("PYTHONPATH", "")]),
        )
    return env


def start(cmd: list[str], data: Path, logs: Path, hold: str) -> subprocess.Popen:
    """The command in its own process group (as a terminal's foreground job), output to files."""
    held = data / "held"
    held.mkdir(exist_ok=True)
    for p in held.iterdir():
        p.unlink()
    return subprocess.Popen(
        cmd,
        cwd=data,
        env=environment(data, hold),
        start_new_session=True,
        stdout=open(logs / "stdout", "w"),
        stderr=open(logs / "stderr", "w"),
    )


def wait_for(cond, proc: subprocess.Popen, logs: Path, what: str) -> None:
    """Poll until ``cond()``; fail with the run's output if it ended first (the deadline only guards a hang)."""
    end = time.monotonic() + 300
    while not cond():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"{what} never came; exit {proc.poll()}\n{(logs / 'stderr').read_text()[-3000:]}")
        time.sleep(0.05)


def logged_steps(run: Path) -> list[int]:
    log = run / "logs" / "metrics.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.is_file() else []


def interrupt_after_first_step(
    cmd, data: Path, run: Path, logs: Path, sig: int, ranks: int, only_rank: int | None = None
) -> subprocess.CompletedProcess:
    """Start ``cmd``, wait for step 1 in the log and every rank holding, send ``sig`` to the process group
    (or to rank ``only_rank`` alone)."""
    logs.mkdir()
    proc = start(cmd, data, logs, hold="until-signal")
    wait_for(lambda: 1 in logged_steps(run) and len(list((data / "held").iterdir())) == ranks, proc, logs, "step 1 and every rank's hold")
    if only_rank is None:
        os.killpg(proc.pid, sig)
    else:  # one process alone gets it (a node's preemption); the others go on until they agree
        os.kill(int((data / "held" / f"rank{only_rank}").read_text()), sig)
        (data / "held" / "release").write_text("")
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        # Ranks that did not stop together wait for each other forever: end them all (torchrun's workers
        # are in sessions of their own), then fail.
        for marker in (data / "held").glob("rank*"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(marker.read_text()), signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the run did not end after the signal\n{(logs / 'stderr').read_text()[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, (logs / "stdout").read_text(), (logs / "stderr").read_text())


def resume_line(res) -> str:
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("stopped after step")]
    assert len(lines) == 1, res.stdout + res.stderr
    return lines[0].split("continue with --resume latest: ", 1)[1]


def generator_state(run: Path) -> dict:
    from dsgan_cli.engines.checkpoint import load_generator

    return load_generator(run / "generator.safetensors")[0].state_dict()


def assert_same_weights(a: Path, b: Path) -> None:
    ga, gb = generator_state(a), generator_state(b)
    for k in ga:
        assert torch.allclose(ga[k], gb[k], atol=1e-6), f"{k}: the resumed run ended with other weights than a straight run"


@pytest.fixture(scope="module")
def straight(data):
    """One uninterrupted run of the same command (one process)."""
    run = data / "straight"
    res = subprocess.run(
        [sys.executable, "-m", "dsgan_cli", *train_args(data, run)],
        cwd=data,
        env=environment(data),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    return run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_the_step_with_a_checkpoint_and_the_printed_command_resumes_exactly(data, straight, tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dsgan_cli", *train_args(data, run, workers=1)]
    res = interrupt_after_first_step(cmd, data, run, tmp_path / "logs", sig, ranks=1)

    assert res.returncode == 128 + sig, res.stderr  # as a shell reports it: `train && next` does not go on
    assert "Traceback" not in res.stderr, res.stderr
    name = signal.Signals(sig).name
    assert f"{name}: stopping after the current step with a checkpoint" in res.stderr
    # No checkpoint was due before step 4: the signal wrote one for the step it stopped after.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"]
    assert f"stopped after step 2 on {name}" in res.stdout
    command = resume_line(res)
    # The command names every --set override the run was started with, and asks for the latest checkpoint.
    args = shlex.split(command)
    assert args[args.index("train") :] == [*train_args(data, run, workers=1)[0:], "--resume", "latest"], command
    # The same command was printed at the signal (a launcher may kill the process before its summary).
    assert f"then resume with: {command}" in res.stderr

    pasted = subprocess.run(command, shell=True, cwd=data, env=environment(data), capture_output=True, text=True, timeout=300)
    assert pasted.returncode == 0, pasted.stderr
    assert f"resumed from {run / 'checkpoints' / 'step_00000002'} at step 2" in pasted.stdout + pasted.stderr
    assert logged_steps(run) == [1, 2, 3, 4]
    assert_same_weights(run, straight)


def test_a_second_ctrl_c_ends_the_run_at_once_without_a_checkpoint(data, tmp_path):
    run, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    cmd = [sys.executable, "-m", "dsgan_cli", *train_args(data, run)]
    proc = start(cmd, data, logs, hold="forever")  # holds after step 1 even after the first signal
    wait_for(lambda: 1 in logged_steps(run) and (data / "held" / "rank0").exists(), proc, logs, "step 1")
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(lambda: "stopping after the current step" in (logs / "stderr").read_text(), proc, logs, "the first signal's line")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == -signal.SIGINT  # the default action: ended by the signal itself
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch() -> list[str]:
    """`accelerate launch` with two processes; on a machine without a GPU they train on the CPU over gloo."""
    if torch.cuda.is_available():
        pytest.skip("runs the CPU (gloo) form of accelerate's multi-process launch")
    return [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "dsgan_cli",
    ]


def test_ctrl_c_under_accelerate_launch_two_processes_checkpoints_once_and_resumes_exactly(data, tmp_path):
    run, launch = tmp_path / "run", accelerate_launch()
    res = interrupt_after_first_step([*launch, *train_args(data, run)], data, run, tmp_path / "logs", signal.SIGINT, ranks=2)

    assert res.returncode == 130, res.stderr
    # Both ranks stopped after the same step; the main process wrote one checkpoint with both ranks' RNG states.
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_00000002"], ckpts
    files = {p.name for p in (run / "checkpoints" / "step_00000002").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= files
    assert res.stderr.count("SIGINT: stopping after the current step") == 1  # said once, by the main process
    command = resume_line(res)
    assert shlex.split(command)[: len(launch)] == ["accelerate", *launch[1:]], command

    pasted = subprocess.run(command, shell=True, cwd=data, env=environment(data), capture_output=True, text=True, timeout=300)
    assert pasted.returncode == 0, pasted.stderr
    assert logged_steps(run) == [1, 2, 3, 4]
    # Two processes draw other batches than one: compare with a straight 2-process run.
    straight2 = tmp_path / "straight2"
    ref = subprocess.run(
        [*launch, *train_args(data, straight2)], cwd=data, env=environment(data), capture_output=True, text=True, timeout=300
    )
    assert ref.returncode == 0, ref.stderr
    assert_same_weights(run, straight2)


def test_sigterm_to_one_rank_alone_stops_every_rank_after_the_same_step(data, tmp_path):
    run, launch = tmp_path / "run", accelerate_launch()
    res = interrupt_after_first_step([*launch, *train_args(data, run)], data, run, tmp_path / "logs", signal.SIGTERM, ranks=2, only_rank=1)
    # Rank 0 got no signal, yet stopped with rank 1 after step 2 (a rank going on alone would hang in DDP or
    # train step 3), and it printed the summary and the command that resumes.
    assert res.returncode != 0, res.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000002"], res.stderr[-3000:]
    assert logged_steps(run) == [1, 2]
    assert "stopped after step 2 on SIGTERM" in res.stdout, res.stdout + res.stderr[-3000:]
