"""Progress every long command shows, on stderr: a rich bar at a terminal, plain lines in a log.

Training runs under `accelerate launch` (its pipe), nohup, tmux logging or a cluster scheduler, where
stderr is no terminal and a bar cannot draw: there a line after the first item (its rate and ETA), then
one every ``DSGAN_PROGRESS_SECONDS`` (30 by default) and one at the end carry the same facts.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second over rich's recent-speed window (so a resumed count does not inflate it)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        shown = f"{speed:.2f}" if speed is not None else "-"
        return Text(f"{shown} {self.unit}/s", style="progress.data.speed")


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


#: Seconds between plain progress lines where no bar can draw, unless DSGAN_PROGRESS_SECONDS says otherwise.
LINE_EVERY_S = 30.0


def line_interval() -> float:
    """``DSGAN_PROGRESS_SECONDS`` (a number > 0), else :data:`LINE_EVERY_S`."""
    try:
        value = float(os.environ.get("DSGAN_PROGRESS_SECONDS", ""))
    except ValueError:
        return LINE_EVERY_S
    return value if value > 0 else LINE_EVERY_S


class LineProgress:
    """The bar's API (``add_task``/``advance``/``update``, a context manager) printing plain lines instead:
    ``train: 120/500 (24%), 1.92 it/s, 2m10s elapsed, ETA 3m18s, G 0.08 D 1.23`` as soon as the first item is
    done (a slow first step must not leave a log silent), then at most every ``every_s`` seconds, and once
    more when a task ends. Rate and ETA count only this run's work (a resumed count is not taken for speed)."""

    def __init__(self, unit: str, fields: Sequence[str] = (), every_s: float = 30.0, stream: TextIO | None = None, clock=time.monotonic):
        self.unit, self.fields, self.every_s, self.clock = unit, tuple(fields), every_s, clock
        self.stream = stream
        self.tasks: list[dict] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        for t in self.tasks:
            if t["completed"] != t["last_printed"]:
                self._print(t)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        now = self.clock()
        self.tasks.append(
            {
                "description": description,
                "total": total,
                "completed": completed,
                "start": completed,
                "t0": now,
                "last_t": now,
                "last_printed": completed,
                "fields": fields,
            }
        )
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, completed=self.tasks[task_id]["completed"] + advance)

    def update(self, task_id: int, completed: float | None = None, total: float | None = None, **fields) -> None:
        t = self.tasks[task_id]
        if completed is not None:
            t["completed"] = completed
        if total is not None:
            t["total"] = total
        t["fields"].update(fields)
        now = self.clock()
        first = t["last_printed"] == t["start"] and t["completed"] > t["start"]
        if first or now - t["last_t"] >= self.every_s or (t["total"] is not None and t["completed"] >= t["total"]):
            self._print(t)

    def line(self, t: dict) -> str:
        """The progress line for task ``t``."""
        done, total, elapsed = t["completed"], t["total"], self.clock() - t["t0"]
        rate = (done - t["start"]) / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{t['description']}: {done:g}" + (f"/{total:g} ({100 * done / total:.0f}%)" if total else ""),
            f"{rate:.2f} {self.unit}/s",
            f"{_duration(elapsed)} elapsed",
        ]
        if total and rate > 0 and done < total:
            parts.append(f"ETA {_duration((total - done) / rate)}")
        extra = " ".join(str(t["fields"][f]) for f in self.fields if t["fields"].get(f))
        return ", ".join(parts) + (f", {extra}" if extra else "")

    def _print(self, t: dict) -> None:
        print(self.line(t), file=self.stream or sys.stderr, flush=True)
        t["last_t"], t["last_printed"] = self.clock(), t["completed"]


def progress_bar(
    enabled: bool = True,
    *,
    unit: str = "img",
    fields: Sequence[str] = (),
    transient: bool = False,
    console: Console | None = None,
    lines_every_s: float | None = None,
) -> Progress | LineProgress:
    """A rich ``Progress`` (use it as a context manager, then ``add_task``/``advance``/``update``).

    Columns: the task's description, bar, done/total, rate in ``unit``/s,
    elapsed time, ETA, then one text column per name in ``fields`` (set with
    ``add_task(..., name=value)`` / ``update(task, name=value)``). Nothing is
    drawn when ``enabled`` is false or the console (stderr by default) is not
    a terminal, so logs and pipes get no bar frames; there a :class:`LineProgress`
    prints plain lines to the same stream instead: after the first item, then every
    ``lines_every_s`` seconds (default :func:`line_interval`).
    """
    console = console or Console(stderr=True)
    if enabled and not console.is_terminal:
        return LineProgress(unit, fields, every_s=lines_every_s or line_interval(), stream=console.file)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *(TextColumn(f"{{task.fields[{f}]}}") for f in fields),
    ]
    return Progress(*columns, console=console, transient=transient, disable=not (enabled and console.is_terminal))
