"""Errors a user can act on, and the exit codes the CLI maps them to."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
#: Some items (images, files) failed while the run as a whole completed.
EXIT_ITEMS_FAILED = 1
#: Bad usage or bad input: a missing path, a broken recipe or checkpoint.
EXIT_USAGE = 2
#: Training stopped because a loss became NaN or infinite.
EXIT_NONFINITE = 3
EXIT_INTERRUPTED = 130
#: Standard output was a pipe whose reader went away (``| head``): 128 + SIGPIPE, as the shell reports it.
EXIT_BROKEN_PIPE = 141


class DsganError(Exception):
    """An error with a one-line message for the user and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def file_error(path: str | Path, reason: str, exit_code: int = EXIT_USAGE) -> DsganError:
    """Build a :class:`DsganError` whose message names ``path`` and ``reason``."""
    return DsganError(f"{path}: {reason}", exit_code)


class StdoutClosed(Exception):
    """Standard output's reader went away (``| head``). Not an OSError, so Click's own EPIPE handling
    (exit 1, which this tool documents as "some items failed") lets it through to the CLI's exit 141."""


def write_stdout(text: str) -> None:
    """Write ``text`` to standard output now (flushed); a closed pipe raises :class:`StdoutClosed`."""
    import sys

    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed() from None
