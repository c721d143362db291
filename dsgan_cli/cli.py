"""Command-line interface: parses arguments and calls the plain functions that do the work.

Heavy imports (torch, torchvision) happen inside the commands so that
``dsgan --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, DsganError

app = typer.Typer(
    name="dsgan",
    help="Learn how real low-quality photos are degraded (DSGAN) and apply it to image folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": os.environ.get("DSGAN_DEBUG") == "1"}


def _version_callback(value: bool) -> None:
    if value:
        print(f"dsgan-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True


@app.command("prepare", help="Detect, align and crop faces from raw photos into fixed-size HR/LR sets.")
def prepare_cmd(
    input_dir: Annotated[Path, typer.Argument(help="Folder of raw photos (searched recursively).")],
) -> int:
    raise DsganError("prepare is not implemented yet")


@app.command("train", help="Train DSGAN from a TOML recipe (run under `accelerate launch` for GPUs).")
def train_cmd(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file, e.g. recipes/idphoto.toml.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key: section.key=value (repeatable).")] = None,
) -> int:
    from .recipe import load_recipe

    load_recipe(recipe, set_ or [])
    raise DsganError("train is not implemented yet")


@app.command("degrade", help="Degrade a folder of HR images with a trained generator (bicubic downscale, then G).")
def degrade_cmd(
    input_dir: Annotated[Path, typer.Argument(help="Folder of HR images (searched recursively).")],
    output_dir: Annotated[Path, typer.Argument(help="Output folder (created; mirrors the input tree).")],
) -> int:
    raise DsganError("degrade is not implemented yet")


@app.command("eval", help="Compare fake and real LR folders: FID/KID and a frequency/noise report.")
def eval_cmd(
    fake_dir: Annotated[Path, typer.Argument(help="Folder of generated (degraded) images.")],
    real_dir: Annotated[Path, typer.Argument(help="Folder of real low-quality images.")],
) -> int:
    raise DsganError("eval is not implemented yet")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn errors into one-line messages and exit codes."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="dsgan")
    except DsganError as e:
        if _state["debug"]:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code if e.exit_code else EXIT_USAGE)
    except (KeyboardInterrupt, click.exceptions.Abort):
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # noqa: BLE001 - last resort: one line unless --debug
        if _state["debug"]:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
