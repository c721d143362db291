"""Every rank stops together: on a non-finite loss, on the time limit and on a signal, at the same step."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ..plumbing.errors import EXIT_NONFINITE, DsganError

#: Longest training time between two all-rank checks of the losses and the time limit (each is a host sync).
SYNC_SECONDS = 30.0


class RankCheck:
    """Every rank stops together on a non-finite loss and on the time limit.

    That takes an all-reduce and a host sync, so :meth:`due` asks for it only when logging, before a
    checkpoint, at the end and at least every ``SYNC_SECONDS``; a non-finite loss in between is
    remembered on the device (:meth:`record`), so none reaches a checkpoint.
    """

    def __init__(self, accelerator, start_step: int, iters: int, max_minutes: float | None):
        self.accelerator, self.start_step, self.iters, self.max_minutes = accelerator, start_step, iters, max_minutes
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
        self.checked = self.next_check = start_step
        self.t_start = time.perf_counter()

    def record(self, stats: dict) -> None:
        """Remember, on the device, whether any loss of this step is not finite."""
        self.nonfinite |= ~torch.isfinite(torch.stack([v for k, v in stats.items() if k.startswith("loss")])).all()

    def due(self, done: int, every: tuple[int, ...]) -> bool:
        """True at the steps where all ranks must agree."""
        return done >= self.next_check or done == self.iters or done == self.start_step + 1 or any(done % n == 0 for n in every)

    def check(self, done: int, stats: dict, last_ckpt: Path | None, signalled: bool = False) -> tuple[dict[str, float], bool]:
        """All-reduce the stats; raise on a non-finite loss; returns (mean stats as floats, stop early: out of time
        or ``signalled``, before the last step)."""
        device = self.accelerator.device
        elapsed = time.perf_counter() - self.t_start
        out_of_time = float(self.max_minutes is not None and elapsed > 60 * self.max_minutes)
        values = torch.stack(
            [*stats.values(), self.nonfinite.float(), torch.tensor(out_of_time, device=device), torch.tensor(elapsed, device=device)]
        ).float()
        values = self.accelerator.reduce(values, reduction="mean").tolist()
        mean_elapsed, stop_early, any_bad = (values.pop(), (values.pop() > 0 or signalled) and done < self.iters, values.pop() > 0)
        losses = dict(zip(stats, values))
        if any_bad or not all(math.isfinite(v) for k, v in losses.items() if k.startswith("loss")):
            self.accelerator.end_training()
            bad = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
            keep = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
            where = f"at step {done}" if self.checked == done - 1 else f"between steps {self.checked + 1} and {done}"
            raise DsganError(
                f'non-finite loss {where} ({bad}); training stopped, {keep}. Try a lower optim.lr or train.precision = "no"',
                exit_code=EXIT_NONFINITE,
            )
        # Same value on every rank (it comes from the all-reduce), so all ranks sync at the same steps.
        self.checked = done
        self.next_check = done + max(1, int(SYNC_SECONDS * (done - self.start_step) / max(mean_elapsed, 1e-9)))
        return losses, stop_early
