"""The one progress bar every long command shows: rich, on stderr, drawn only for a person at a terminal."""

from __future__ import annotations

from typing import Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
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


def progress_bar(enabled: bool = True, *, unit: str = "img", fields: Sequence[str] = (), transient: bool = False,
                 console: Console | None = None) -> Progress:
    """A rich ``Progress`` (use it as a context manager, then ``add_task``/``advance``/``update``).

    Columns: the task's description, bar, done/total, rate in ``unit``/s,
    elapsed time, ETA, then one text column per name in ``fields`` (set with
    ``add_task(..., name=value)`` / ``update(task, name=value)``). Nothing is
    drawn when ``enabled`` is false or the console (stderr by default) is not
    a terminal, so logs and pipes get no bar frames.
    """
    console = console or Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn(), *(TextColumn(f"{{task.fields[{f}]}}") for f in fields)]
    return Progress(*columns, console=console, transient=transient, disable=not (enabled and console.is_terminal))
