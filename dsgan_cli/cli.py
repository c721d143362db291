"""Command-line interface: parses arguments and calls the plain functions that do the work.

Heavy imports (torch, torchvision) happen inside the commands so that
``dsgan --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from . import __version__
from .cli_options import (
    BatchSizeOption,
    CheckpointOption,
    CpuOption,
    HRFolderArgument,
    JsonSummaryOption,
    PrecisionOption,
    ProgressOption,
    SeedOption,
    TileOption,
    WorkersOption,
    checkpoint_or_default,
    is_main_process,
    summarise,
)
from .plumbing.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE, DsganError, StdoutClosed

app = typer.Typer(
    name="dsgan",
    help="Learn how real low-quality photos are degraded (DSGAN) and apply it to image folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": os.environ.get("DSGAN_DEBUG") == "1", "argv": []}


def _version_callback(value: bool) -> None:
    if value:
        print(f"dsgan-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True


# Arguments and options shared by the folder commands (prepare, degrade, pairs).
@app.command("prepare", help="Detect, align and crop faces from raw photos into fixed-size HR/LR sets.")
def prepare_cmd(
    input_dir: Annotated[Path, typer.Argument(help="Folder of raw photos (searched recursively).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: INPUT_aligned_SIZE beside the input).")] = None,
    size: Annotated[int, typer.Option(help="Output side in pixels: 256 for HR sets, 128 for LR sets.")] = 256,
    detector: Annotated[str, typer.Option(help="Face detector: hog (fast) or cnn (slower, more robust).")] = "hog",
    margin: Annotated[float, typer.Option(help="Extra room around the face: 0.2 makes the face 1/1.2 as large.")] = 0.0,
    min_face: Annotated[int | None, typer.Option(help="Skip faces narrower than this many pixels (default: size/4).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: all CPU cores).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute and replace existing outputs.")] = False,
    json_out: JsonSummaryOption = False,
    progress: ProgressOption = True,
) -> int:
    from .commands.prepare import FaceCrop, prepare_folder, report

    summary = prepare_folder(
        input_dir,
        out,
        FaceCrop(size=size, detector=detector, margin=margin, min_face=min_face),
        workers=workers,
        overwrite=overwrite,
        progress=progress,
    )
    return report(summary, json_out)


@app.command("train", help="Train DSGAN from a TOML recipe (run under `accelerate launch` for GPUs).")
def train_cmd(
    recipe: Annotated[str, typer.Argument(metavar="RECIPE", help="A built-in recipe (idphoto, paper) or a recipe TOML file.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a recipe key: section.key=value (repeatable).")] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume", help="Continue a run: 'latest' (newest complete checkpoint in train.output_dir) or a checkpoints/step_... folder."
        ),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Do not show the progress bar.")] = False,
    max_minutes: Annotated[
        float | None,
        typer.Option("--max-minutes", min=0.0, help="Stop (with a checkpoint) after this much training time; --resume latest continues."),
    ] = None,
) -> int:
    from .engines.interrupt import TrainingStopped, resume_command
    from .engines.train import train
    from .method.recipe import load_recipe

    result = train(
        load_recipe(recipe, set_ or []),
        resume=resume,
        progress=not no_progress,
        max_minutes=max_minutes,
        resume_command=resume_command(_state["argv"]),
    )
    if result.stopped_by:
        raise TrainingStopped(result.stopped_by)
    return 0


@app.command("degrade", help="Degrade a folder of HR images with a trained generator (bicubic downscale, then G).")
def degrade_cmd(
    input_dir: HRFolderArgument,
    output_dir: Annotated[Path, typer.Argument(help="Output folder (created; mirrors the input tree).")],
    checkpoint: CheckpointOption = None,
    scale: Annotated[int | None, typer.Option("--scale", help="Downscale factor for Xb (default: the checkpoint's).")] = None,
    downscale: Annotated[bool, typer.Option("--downscale/--no-downscale", help="--no-downscale: inputs are already at LR size.")] = True,
    fmt: Annotated[str, typer.Option("--format", help="Output format: png, jpg, webp, bmp, tif.")] = "png",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist (default: skip them).")] = False,
    tile: TileOption = None,
    batch_size: BatchSizeOption = None,
    workers: WorkersOption = None,
    precision: PrecisionOption = "fp32",
    cpu: CpuOption = False,
    seed: SeedOption = 0,
    json_out: JsonSummaryOption = False,
    progress: ProgressOption = True,
) -> int:
    from .commands.degrade import DegradeScale, degrade_folder, report
    from .engines.run_settings import RunOptions

    main_process = is_main_process()
    checkpoint = checkpoint_or_default(checkpoint, announce=main_process)
    opts = RunOptions(
        fmt=fmt, cpu=cpu, tile=tile, batch_size=batch_size, workers=workers, precision=precision, progress=progress, seed=seed
    )
    summary = degrade_folder(input_dir, output_dir, checkpoint, opts, DegradeScale(scale, downscale), overwrite=overwrite)
    return summarise(summary, report, json_out, show=main_process)


@app.command("pairs", help="Write (HR, LR) super-resolution training pairs: DIR/hr, DIR/lr and a BasicSR meta_info.txt.")
def pairs_cmd(
    input_dir: HRFolderArgument,
    output_dir: Annotated[Path, typer.Argument(help="Pairs folder: gets hr/, lr/, meta_info.txt and pairs.json.")],
    checkpoint: CheckpointOption = None,
    scale: Annotated[int | None, typer.Option("--scale", help="SR scale: LR = HR / scale (default: the checkpoint's).")] = None,
    cleanup_factor: Annotated[
        int, typer.Option("--cleanup-factor", help="Downscale HR by N first to clean it (the paper's TDSR); 1 = none (SDSR).")
    ] = 1,
    fmt: Annotated[str, typer.Option("--format", help="Image format of both folders: png, jpg, webp, bmp, tif.")] = "png",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Remake pairs that already exist (default: skip them).")] = False,
    tile: TileOption = None,
    batch_size: BatchSizeOption = None,
    workers: WorkersOption = None,
    precision: PrecisionOption = "fp32",
    cpu: CpuOption = False,
    seed: SeedOption = 0,
    json_out: JsonSummaryOption = False,
    progress: ProgressOption = True,
) -> int:
    from .commands.pairs import make_pairs, report
    from .engines.run_settings import RunOptions

    main_process = is_main_process()
    checkpoint = checkpoint_or_default(checkpoint, announce=main_process)
    opts = RunOptions(
        fmt=fmt, cpu=cpu, tile=tile, batch_size=batch_size, workers=workers, precision=precision, progress=progress, seed=seed
    )
    summary = make_pairs(input_dir, output_dir, checkpoint, opts, scale=scale, cleanup_factor=cleanup_factor, overwrite=overwrite)
    return summarise(summary, report, json_out, show=main_process)


@app.command("import", help="Convert a generator of the original DSGAN code (.tar, model_g_state_dict) to generator.safetensors.")
def import_cmd(
    source: Annotated[Path, typer.Argument(help="Checkpoint of the original implementation, e.g. DF2K_gaussian.tar.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file [default: SOURCE with the suffix .safetensors].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")] = False,
) -> int:
    from .commands.importer import import_original

    dest, meta = import_original(source, out, overwrite=overwrite)
    print(
        f"imported {source} (epoch {meta['epoch'] or '?'}, iteration {meta['iteration'] or '?'}, "
        f"{meta['n_res_blocks']} residual blocks, scale {meta['scale']}) -> {dest}",
        file=sys.stderr,
    )
    return 0


@app.command(
    "weights",
    help="Download the pretrained networks into the torch hub cache and check them: VGG19 and AlexNet "
    "(perceptual losses) by default, inception (FID) when named. Offline, copy the files there "
    "from a machine with internet access, or name a file with --set perceptual.weights=PATH.",
)
def weights_cmd(
    nets: Annotated[
        list[str] | None, typer.Argument(metavar="[vgg19|alexnet|inception]...", help="Networks to fetch [default: vgg19 alexnet].")
    ] = None,
) -> int:
    from .commands.weights import fetch_all

    fetch_all(nets or [])
    return 0


@app.command("eval", help="Compare fake and real LR folders: FID/KID and a frequency/noise report.")
def eval_cmd(
    fake_dir: Annotated[Path, typer.Argument(help="Folder of generated (degraded) images.")],
    real_dir: Annotated[Path, typer.Argument(help="Folder of real low-quality images.")],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="HR folder the fake images were made from. Adds the baseline: the FID of its bicubic Xb against the real set; and the verdict: how much of the way from that Xb FID down to the real floor (FID between two halves of the real set, at equal sizes) the fake set closes. Also adds Xb to the frequency report, and each fake image's colour shift and border ratio against its own Xb (paired by name).",
        ),
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", metavar="PATH|-", help="Write the report as JSON to PATH, or to stdout with '-'.")
    ] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            "--inception-weights",
            envvar="DSGAN_INCEPTION_WEIGHTS",
            help="Local torch-fidelity Inception-v3 weights file (for offline machines).",
        ),
    ] = None,
    no_fid: Annotated[bool, typer.Option("--no-fid", help="Skip FID/KID; frequency/noise report only (needs no weights).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per Inception batch.")] = 64,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache for each set's statistics [default: $XDG_CACHE_HOME/dsgan-cli/fid].")
    ] = None,
    data_cache_dir: Annotated[
        str | None,
        typer.Option(
            "--data-cache-dir",
            metavar="PATH|none",
            help="Cache of the decoded images, as train's data.cache_dir; 'none': a temporary one [default: $XDG_CACHE_HOME/dsgan-cli/data].",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Spectrum plot PNG [default: next to --json PATH as NAME_spectrum.png; without either, no plot]."),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            metavar="N|WxH",
            help="Resize every image to N or WxH first [default: the real images' most common size, only when sizes differ].",
        ),
    ] = None,
    random_inception: Annotated[
        bool, typer.Option("--random-inception", help="Use randomly initialised Inception weights (tests only; numbers are meaningless).")
    ] = False,
) -> int:
    from rich.console import Console

    from .commands.eval_report import Reporter, default_plot_path, print_report
    from .commands.evaluate import EvalOptions, evaluate, exit_code

    # With --json - the JSON owns stdout; tables, warnings and progress go to stderr.
    console = Console(stderr=json_out == "-")
    err = Console(stderr=True)
    if plot is None:
        inputs = [p for p in (fake_dir, real_dir, reference) if p is not None]
        plot = default_plot_path(json_out, inputs, Reporter(err))
    opts = EvalOptions(
        reference_dir=reference,
        inception_weights=inception_weights,
        fid=not no_fid,
        batch_size=batch_size,
        cache_dir=cache_dir,
        data_cache_dir=data_cache_dir,
        plot_path=plot,
        json_path=json_out,
        progress=True,
        allow_random_inception=random_inception,
        size=size,
    )
    result = evaluate(fake_dir, real_dir, opts, console=err)
    print_report(result, console)
    return exit_code(result)


@app.command(
    "demo",
    help="Build a demo data set from scikit-image photographs, train on it, degrade held-out photos, "
    "evaluate, and report whether the known degradation was learned (CPU, minutes).",
)
def demo_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="Demo folder [default: demo_output, or demo_output/quick with --quick].")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes and a few steps: checks the pipeline in seconds (CI).")] = False,
    recipe: Annotated[
        str, typer.Option("--recipe", metavar="NAME|FILE", help="Training recipe: a built-in name (idphoto, paper) or a TOML file.")
    ] = "idphoto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a recipe key, e.g. --set train.iterations=1000 (repeatable)."),
    ] = None,
    perceptual_weights: Annotated[
        str,
        typer.Option(
            "--perceptual-weights",
            help="'auto' (pretrained VGG19 when cached, else random, said on screen), 'torchvision', 'random' or a file.",
        ),
    ] = "auto",
    inception_weights: Annotated[
        str | None,
        typer.Option(
            "--inception-weights",
            envvar="DSGAN_INCEPTION_WEIGHTS",
            help="Local Inception-v3 weights for FID [default: torch-fidelity's cache if present, else FID is skipped].",
        ),
    ] = None,
    require_learning: Annotated[
        bool, typer.Option("--require-learning", help="Exit with 1 unless the paired targets hold (see the report).")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> int:
    from .commands.demo import DemoOptions, run_demo

    run_demo(
        DemoOptions(
            out=out or Path("demo_output/quick" if quick else "demo_output"),
            quick=quick,
            recipe=recipe,
            overrides=set_ or [],
            perceptual_weights=perceptual_weights,
            inception_weights=inception_weights,
            require_learning=require_learning,
            progress=not no_progress,
        )
    )
    return 0


#: What Ctrl-C leaves behind per subcommand, and how to go on.
_RESUME_HINTS = {
    "train": "training stopped while it started, before its first step: run the same command again",
    "degrade": "degrade stopped; finished outputs are kept: run the same command again to convert the rest",
    "pairs": "pairs stopped; complete pairs are kept: run the same command again to write the rest",
    "import": "import stopped; no output file was written: run the same command again",
    "prepare": "prepare stopped; finished crops and records are kept: run the same command again to continue",
    "eval": "eval stopped before writing its report: run the same command again",
    "demo": "demo stopped; its built data is kept and reused: run the same command again",
    "weights": "weights stopped; a download is kept only when complete and checked: run the same command again",
}


def interrupted_message(argv: list[str] | None) -> str:
    """One line saying what Ctrl-C interrupted and how to resume it."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = next((a for a in args if a in _RESUME_HINTS), None)
    if command is None:
        return "interrupted"
    return f"interrupted: {_RESUME_HINTS[command]}"


def _error_line(line: str) -> None:
    """Print an error line in one write: the processes of `accelerate launch` share one stderr, and print()'s
    separate write of the newline let their lines run into each other."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn errors into one-line messages and exit codes."""
    from .engines.interrupt import TrainingStopped

    _state["argv"] = sys.argv[1:] if argv is None else [str(a) for a in argv]  # for the command that resumes a training
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="dsgan")
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
    except (BrokenPipeError, StdoutClosed):
        # The reader of stdout went away (`| head`): the work is done, its report has no reader. Exit as a
        # command killed by SIGPIPE does, not 1 ("some items failed"); devnull keeps the exit flush quiet.
        from .plumbing.writes import silence_stdout

        silence_stdout()
        sys.exit(EXIT_BROKEN_PIPE)
    except DsganError as e:
        if _state["debug"]:
            raise
        _error_line(f"error: {e}")
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except TrainingStopped as e:  # its checkpoint and the command that resumes are printed already
        sys.exit(e.exit_code)
    except TyperException as e:
        # Usage errors (missing argument, bad option value) show usage and exit 2.
        show = getattr(e, "show", None)
        show() if show else print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        print(interrupted_message(argv), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        if _state["debug"]:
            raise
        _error_line(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        sys.exit(1)
    if rv == EXIT_INTERRUPTED:
        # Typer turns Ctrl-C into a silent Exit(130) when not standalone; no command returns 130 itself.
        print(interrupted_message(argv), file=sys.stderr)
    sys.exit(rv if isinstance(rv, int) else 0)
