"""What training shows a person: the run's first line and time estimates, metrics (Accelerate trackers, always a
JSONL file), sample grids and the closing summary."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accelerate.tracking import GeneralTracker

from ..data.images import tensor_to_image
from ..method.models import FilterHigh
from ..method.recipe import Recipe
from ..plumbing.jsonl import read_jsonl
from ..plumbing.writes import make_dirs, open_append, save_image_atomic, write_bytes_atomic
from .device import auto_precision, on_cuda

METRICS_FILE = "metrics.jsonl"

#: High-passes are centred on grey and amplified so that noise and blur are visible.
HIGHPASS_GAIN = 4.0


class JSONLTracker(GeneralTracker):
    """Accelerate tracker writing one JSON object per logged step to ``logs/metrics.jsonl``."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | Path, keep_until_step: int | None = None):
        super().__init__()
        self.path = Path(logging_dir) / METRICS_FILE
        make_dirs(self.path.parent)
        if keep_until_step is not None:
            truncate_metrics(self.path, keep_until_step)
        self._f = open_append(self.path)

    @property
    def tracker(self):
        return self._f

    def store_init_configuration(self, values: dict) -> None:
        """The recipe is copied next to the logs by the trainer; nothing to store here."""

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def finish(self) -> None:
        self._f.close()


def _plain(v: Any) -> Any:
    """JSON-friendly scalar."""
    if isinstance(v, torch.Tensor):
        return v.item()
    return v


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop records after ``last_step`` (logged after the checkpoint a run resumes from) and any line a kill cut."""
    if not path.is_file():
        return
    kept = [json.dumps(r) for r in read_jsonl(path) if (r.get("step") or 0) <= last_step]
    write_bytes_atomic(path, ("\n".join(kept) + "\n" if kept else "").encode())


def trackers_for(logging_dir: Path, keep_until_step: int | None) -> list:
    """JSONL always; TensorBoard as well when it is installed."""
    trackers: list = [JSONLTracker(logging_dir, keep_until_step)]
    if importlib.util.find_spec("tensorboard") is not None:
        trackers.append("tensorboard")
    return trackers


@torch.no_grad()
def highpass_view(x: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """The discriminator's high-pass of a (N, 3, H, W) batch, amplified around mid-grey for viewing."""
    with torch.no_grad():
        hp = FilterHigh(kernel_size).to(x.device)(x.float())
    return (0.5 + HIGHPASS_GAIN * hp).clamp(0, 1)


def sample_grid(xb: torch.Tensor, xd: torch.Tensor, real: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """One row per image: Xb | Xd | real LR | high-pass(Xd) | high-pass(real LR), 2-px gaps; (3, H, W)."""
    from torchvision.utils import make_grid

    cols = [xb, xd, real, highpass_view(xd, kernel_size), highpass_view(real, kernel_size)]
    cols = [c.float().cpu() for c in cols]
    tiles = torch.stack(cols, dim=1).flatten(0, 1)  # row-major: image i's five views side by side
    return make_grid(tiles, nrow=len(cols), padding=2, pad_value=1.0)


def save_sample_grid(path: Path, xb: torch.Tensor, xd: torch.Tensor, real: torch.Tensor, kernel_size: int = 5) -> None:
    """Write the sample grid PNG atomically."""
    save_image_atomic(tensor_to_image(sample_grid(xb, xd, real, kernel_size)), path)


class RunTiming:
    """The run's first line (devices, precision), the estimated time to the end measured on the first step
    (a slow run must say so at once, not minutes later), and again once a few more steps are timed (the
    first one also builds caches and warms up), with a hint when a recipe sized for a GPU runs on a CPU."""

    #: Steps timed after the first one for the second estimate.
    TIMED = 3
    #: A CPU run expected to take longer than this gets the hint.
    SLOW_CPU_S = 3600.0

    def __init__(self, accelerator, r: Recipe, start_step: int, iters: int, tuned: str = ""):
        self.r, self.start_step, self.iters, self.t1 = r, start_step, iters, None
        self.t0 = time.perf_counter()
        self.cpu = accelerator.device.type == "cpu"
        where = f"{accelerator.num_processes} x {accelerator.device}" if accelerator.num_processes > 1 else str(accelerator.device)
        why = ""
        if r.train.precision == "auto" and os.environ.get("ACCELERATE_MIXED_PRECISION", "no") == "no":
            why = f" (auto: {auto_precision(on_cuda())[1]})"
        print(
            f"training steps {start_step + 1}-{iters} on {where}, precision {accelerator.mixed_precision}{why}, "
            f"batch {r.train.batch_size} x {r.train.grad_accum} at {r.data.crop_size or r.data.lr_size} px LR"
            + (f"; {tuned}" if tuned else ""),
            file=sys.stderr,
            flush=True,
        )

    def step(self, done: int) -> None:
        """Call after each step; prints the estimate after the first step and after TIMED more."""
        if done == self.start_step + 1:
            self.t1 = time.perf_counter()
            self.estimate(self.t1 - self.t0, done, " (first step, with warm-up)")
        elif self.t1 is not None and done == self.start_step + 1 + self.TIMED:
            self.estimate((time.perf_counter() - self.t1) / self.TIMED, done, "")
            self.t1 = None

    def estimate(self, per_step: float, done: int, what: str) -> None:
        """Print the rate and the time left at ``per_step`` seconds a step."""
        left = per_step * (self.iters - done)
        hint = ""
        if self.cpu and left > self.SLOW_CPU_S:
            hint = (
                "; this recipe is sized for a GPU: on a CPU use a GPU machine, shrink it with --set, "
                "or train the built-in 'idphoto' recipe, which runs in minutes"
            )
        eta = f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min" if left >= 60 else f"{left:.0f} s"
        print(f"{per_step:.2f} s/step{what}: about {eta} to step {self.iters}{hint}", file=sys.stderr, flush=True)


def learned_from(path: Path) -> str:
    """What the exported generator learned of the degradation's structure (see
    :func:`~dsgan_cli.method.models.learned_structure`); '' without those options."""
    from ..method.models import learned_structure
    from .checkpoint import load_generator

    return learned_structure(load_generator(path)[0])


def print_summary(
    out: Path,
    start_step: int,
    done: int,
    iters: int,
    max_minutes: float | None,
    last_ckpt,
    signum: int | None = None,
    resume: str | None = None,
) -> None:
    """Where the run's outputs are, and, for a run that stopped early, the command that continues it."""
    import signal

    print(f"trained {done - start_step} steps (now at step {done} of {iters})")
    if done < iters:
        why = f"{signal.Signals(signum).name}" if signum else f"the {max_minutes:g}-minute limit"
        print(f"stopped after step {done} on {why}; continue with --resume latest" + (f": {resume}" if resume else ""))
    print(f"generator:  {out / 'generator.safetensors'}")
    learned = learned_from(out / "generator.safetensors")
    if learned:
        print(f"learned:    {learned}")
    print(f"checkpoint: {last_ckpt}")
    print(f"samples:    {out / 'samples'}")
    print(f"logs:       {out / 'logs' / 'metrics.jsonl'}")


def sample_batch(hr_set, lr_set, scale: int, device: torch.device):
    """A fixed batch of (Xb, real LR) for the sample grids."""
    from ..method.models import downscale

    n = min(4, len(hr_set.images), len(lr_set.images))
    return downscale(hr_set.images[:n].float().div(255), scale).to(device), lr_set.images[:n].float().div(255).to(device)


def save_samples(accelerator, G, path: Path, sample_xb, sample_real, r: Recipe) -> None:
    """Sample grid: Xb, G(Xb) and real LR side by side."""
    g = accelerator.unwrap_model(G)
    # Fixed, private noise: grids of different steps compare, and the global RNG that checkpoints
    # save is left alone (drawing from it here made a resumed noise-input run differ from a straight one).
    noise = g.make_noise(sample_xb, torch.Generator(device=sample_xb.device).manual_seed(0))
    with torch.no_grad(), accelerator.autocast():
        sample_xd = g(sample_xb, noise, origin=(0, 0))  # an origin: no random block phase, no global RNG draw
    save_sample_grid(path, sample_xb, sample_xd, sample_real, r.model.filter_kernel)
