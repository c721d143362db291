"""Ctrl-C and preemption during training: finish the step, write a checkpoint, say how to resume.

SIGINT (a terminal's Ctrl-C) and SIGTERM (a cluster's preemption, a launcher's shutdown) only set a flag;
the training loop asks :meth:`StopOnSignal.agreed` after every step, which answers the same on every
process (one rank may get the signal before another, or alone), so all ranks stop after the same step
and write one checkpoint together. A second SIGINT kills the process at once, without a checkpoint:
the first one restores the default action, so the kernel acts even while a long operation runs.

What the launchers do with a signal (and how long they wait before SIGKILL):

* a terminal sends Ctrl-C to its whole foreground process group;
* ``accelerate launch`` with one process shares that group with its child, then also sends it SIGTERM
  and kills it 5 seconds later (not configurable);
* ``torchrun`` and ``accelerate launch --multi_gpu`` start their workers in their own session and
  forward the signal they got to them, then kill them after ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds
  (30 by default): raise it when a step and a checkpoint take longer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

#: The signals that ask a training to stop after its current step.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """Training stopped on a signal after writing its checkpoint (what to do next is already printed)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        #: As a shell reports a command ended by that signal, so `dsgan train ... && next` does not go on.
        self.exit_code = 128 + signum


def _write_stderr(text: str) -> None:
    """Write from a signal handler: unbuffered, so a handler that runs inside another print cannot collide
    with it, and silent when stderr is gone (a launcher that already exited)."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class StopOnSignal:
    """While active (a context manager), SIGINT and SIGTERM ask the training to stop after the current step.

    ``say``: this process prints (the main process; the others stay quiet). ``resume``: the command line
    that continues the run, printed at the first signal, because a launcher may kill the process before
    it can print anything later. Handlers are installed only in the main thread (Python allows no other).
    Not ``active`` (a training called as a function, as the demo does), it changes nothing and never stops.
    """

    def __init__(self, accelerator, say: bool, resume: str | None, active: bool = True):
        self.say, self.resume, self.active = say, resume, active
        self.signum: int | None = None
        self.previous: dict[int, object] = {}
        self.group = None
        self.world = accelerator.num_processes
        if self.world > 1 and active:
            import torch.distributed as dist

            # The flag is agreed on at every step: over gloo it is a host-side exchange of one number,
            # where NCCL would force a host-device synchronisation per step.
            if dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo")

    def __enter__(self) -> StopOnSignal:
        if self.active and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            return  # a launcher's own SIGTERM after the terminal's Ctrl-C: already stopping
        self.signum = signum
        # A second Ctrl-C takes the default action: the process ends at once.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if self.say:
            then = f"; then resume with: {self.resume}" if self.resume else ""
            _write_stderr(
                f"\n{signal.Signals(signum).name}: stopping after the current step with a checkpoint "
                f"(Ctrl-C again stops at once, without one){then}\n"
            )

    def agreed(self) -> bool:
        """Whether any process got a stop signal: the same answer on every process. Call at every step, on all."""
        if not self.active or self.world == 1:
            return self.signum is not None
        import torch
        import torch.distributed as dist

        # The signal's number travels with the flag: every process ends with the same exit code.
        flag = torch.tensor([self.signum or 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if flag.item():
            self.signum = int(flag.item())
        return bool(flag.item())


# ----------------------------------------------------------------------------- the command that resumes


def _parent_argv() -> list[str]:
    """The parent process's command line (Linux), or [] where it cannot be read."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]


def _short(path: str) -> str:
    """A program by its bare name when that name on PATH is the same file, else as given."""
    name = os.path.basename(path)
    found = shutil.which(name)
    try:
        if found and os.path.samefile(found, path):
            return name
    except OSError:
        pass
    return path


def _program(parent: list[str], own: list[str]) -> list[str]:
    """How this process was started, up to its own arguments ``own``: the launcher's command line
    (``accelerate launch ... -m dsgan_cli``, ``torchrun ...``) when the parent ran this very command,
    else ``dsgan`` or ``python -m dsgan_cli``."""
    if own and len(parent) > len(own) and parent[-len(own) :] == own:
        prefix = parent[: -len(own)]
        # `python /venv/bin/accelerate launch ...`: a script's interpreter line says python; the script is the command.
        if (
            len(prefix) > 1
            and os.path.basename(prefix[0]).startswith("python")
            and not prefix[1].startswith("-")
            and os.access(prefix[1], os.X_OK)
        ):
            prefix = prefix[1:]
        return [_short(prefix[0]), *prefix[1:]]
    argv0 = sys.argv[0] if sys.argv else "dsgan"
    if argv0.endswith("__main__.py") or argv0 in ("-m", "-c", ""):
        return [_short(sys.executable), "-m", "dsgan_cli"]
    return [_short(argv0)]


def resume_command(args: list[str], parent: list[str] | None = None) -> str:
    """The shell command that continues this run: how it was started, its arguments with ``--resume latest``
    in place of any ``--resume`` given (its recipe and ``--set`` overrides kept as typed)."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--resume":
            skip = True
        elif not a.startswith("--resume="):
            kept.append(a)
    own = sys.argv[1:]
    program = _program(_parent_argv() if parent is None else parent, own)
    return shlex.join([*program, *kept, "--resume", "latest"])
