"""The one reader of JSON-lines files (training metrics, prepare's manifest and journal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import file_error
from .reads import open_regular


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects in ``path``, one per line; [] when it does not exist.

    Appenders flush one whole line at a time, so a kill can only leave a cut
    last line; that line, blank lines and any line that is not a JSON object
    are skipped, so a crashed run's log stays readable. A path that exists but
    cannot be read (a folder, a FIFO, no permission) is an error naming it.
    """
    path = Path(path)
    try:
        with open_regular(path) as f:
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise file_error(path, f"cannot read ({e.strerror or e})") from None
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records
