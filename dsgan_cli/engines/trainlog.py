"""What training shows a person: metrics (Accelerate trackers, always a JSONL file) and sample grids."""

from __future__ import annotations

import importlib.util

import json
from pathlib import Path
from typing import Any

import torch
from accelerate.tracking import GeneralTracker

from ..data.images import tensor_to_image
from ..plumbing.jsonl import read_jsonl
from ..method.models import FilterHigh
from ..plumbing.writes import make_dirs, open_append, save_image_atomic, write_bytes_atomic

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
