"""What the commands of :mod:`dsgan_cli.cli` share: their common options and arguments, the default generator,
the main-process test and the folder-job summary."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

CpuOption = Annotated[bool, typer.Option("--cpu", help="Run on the CPU even when a GPU is present.")]
JsonSummaryOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")]
ProgressOption = Annotated[
    bool,
    typer.Option(
        "--progress/--no-progress", help="Show progress: a bar at a terminal, else a plain line every 30 s (DSGAN_PROGRESS_SECONDS)."
    ),
]
HRFolderArgument = Annotated[Path, typer.Argument(help="Folder of clean HR images (searched recursively).")]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="generator.safetensors, or a run folder holding one [default: runs/idphoto/generator.safetensors, "
        "else the only runs/*/generator.safetensors].",
    ),
]
# The generator's run options, shared by degrade and pairs (one inference engine).
TileOption = Annotated[
    int | None, typer.Option("--tile", help="Run G in overlapping tiles of N LR pixels for larger images (default 1024; 0 = never; exact).")
]
BatchSizeOption = Annotated[int | None, typer.Option("--batch-size", help="Images per G call (default 8 on CPU, 16 on GPU).")]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", help="Decoding worker processes (default 0 = one thread on CPU; 8 on GPU).")
]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16 (autocast).")]
SeedOption = Annotated[
    int,
    typer.Option(
        "--seed", min=0, max=2**31 - 1, help="Seeds the noise of generators that take it (model.output_noise), per image; reruns reproduce."
    ),
]


def is_main_process() -> bool:
    """Whether this is the main process of an ``accelerate launch`` (or the only process)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def checkpoint_or_default(checkpoint: Path | None, announce: bool = True) -> Path:
    """The given generator, or the default one (named on stderr) when none is given."""
    from .engines.checkpoint import default_generator

    if checkpoint is None:
        checkpoint = default_generator()
        if announce:
            print(f"using checkpoint {checkpoint}", file=sys.stderr)
    return checkpoint


def summarise(summary, report, json_out: bool, show: bool = True) -> int:
    """Print a folder job's report (and its JSON when asked); the exit code says whether some items failed."""
    import json

    from rich.console import Console

    from .plumbing.errors import EXIT_ITEMS_FAILED, EXIT_OK, write_stdout

    if show:
        report(summary, Console(stderr=True))
        if json_out:
            write_stdout(json.dumps(summary.to_dict(), indent=2) + "\n")
    return EXIT_ITEMS_FAILED if summary.failed else EXIT_OK
