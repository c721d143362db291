"""What a folder run works on and what it reports: :class:`Job`, one input file and the output(s) it becomes, and
:class:`FolderSummary`, what ``degrade`` or ``pairs`` did over all processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..plumbing.output_record import RunSummary


@dataclass
class FolderSummary(RunSummary):
    """What a folder run (``degrade``, ``pairs``) did, over all processes when several ran: the shared
    summary plus the modes converted to 8-bit RGB, the throughput and where it ran."""

    converted_modes: dict[str, int] = field(default_factory=dict)
    images_per_second: float = 0.0
    scale: int = 1
    device: str = "cpu"
    processes: int = 1


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    src: Path
    dest: Path
    rel: str = ""  # path relative to the input folder: seeds this image's noise input, if G takes one
    hr_dest: Path | None = None  # ``pairs``: where the (cropped, cleaned) HR goes, written before the LR

    def done(self) -> bool:
        """Whether every output of this job exists (HR first, LR last: LR present means the pair is complete)."""
        return self.dest.exists() and (self.hr_dest is None or self.hr_dest.exists())
