"""What every benchmark script does with its result: print the JSON and, when asked, write it to a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit_json(report: dict, path: Path | None) -> None:
    """Print ``report`` as indented JSON on stdout; also write it to ``path`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
