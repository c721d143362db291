"""The record an output folder keeps of what made its files, the ``--overwrite`` policy built on it, and the
summary every command that fills an output folder reports (:class:`RunSummary`).

``degrade`` and ``pairs`` write one JSON record per output folder: the generator's SHA-256 and every setting
that changes the pixels. A later run with other settings is refused unless ``--overwrite``; while such a
run replaces the outputs, the record says so (``replacing_earlier_outputs``), so an interrupted replacement
is never taken for a finished one. The record also lists, under ``outputs``, the files the tool wrote there
(paths relative to the folder): only those are ever removed as stale (:mod:`dsgan_cli.engines.folder_job`).

``prepare``, ``degrade`` and ``pairs`` report their runs as a :class:`RunSummary` (each adds its own fields), so
their ``--json`` summaries share the keys ``output_dir``, ``written``, ``skipped``, ``failed`` and ``seconds``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import file_error
from .reads import open_regular
from .writes import write_bytes_atomic


@dataclass
class RunSummary:
    """What a run did to its output folder: the part of the summary ``prepare``, ``degrade`` and ``pairs`` share.

    ``written``: outputs this run wrote; ``skipped``: inputs whose outputs were already there and were kept
    (or, for ``prepare``, whose records were reused); ``failed``: ``(path, reason)`` of the inputs not processed.
    Commands derive their own summary from it and add only their own fields.
    """

    output_dir: str = ""
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: failures as ``{"path", "reason"}`` objects, paths as strings, seconds to the millisecond."""
        d = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        d["seconds"] = round(self.seconds, 3)
        return d


def output_record(
    generator_sha256: str, scale: int, suffix: str, precision: str | None, seed: int | None = None, **extra: Any
) -> dict[str, Any]:
    """What decides an output's pixels: the generator file's SHA-256 and the settings that change them
    (``seed`` only for a generator that takes noise; ``extra`` for a command's own settings)."""
    record = {"generator_sha256": generator_sha256, "scale": scale, "format": suffix, "precision": precision or "fp32", **extra}
    if seed is not None:
        record["seed"] = seed
    return record


def read_output_record(path: Path) -> dict[str, Any] | None:
    """A folder's record (``degrade``, ``pairs``, ``prepare``): None when there is none; one that cannot be read
    or is not a JSON object reads as ``{"unreadable": True}``, which matches no settings (so it is refused
    without ``--overwrite``, never taken for empty)."""
    try:
        with open_regular(path) as f:
            old = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}
    return old if isinstance(old, dict) else {"unreadable": True}


#: Key of the record's list of the files the tool wrote in the folder; not a setting, so never compared.
OUTPUTS = "outputs"
#: Key of the mark an unfinished replacing run leaves.
REPLACING = "replacing_earlier_outputs"


def recorded_outputs(old: dict[str, Any] | None) -> set[str]:
    """The outputs a record lists as the tool's own: relative paths inside the folder only (an absolute path, a
    ``..`` or an empty part is ignored, so a damaged or planted record cannot point the tool at other files)."""
    listed = (old or {}).get(OUTPUTS)
    if not isinstance(listed, list):
        return set()
    own = set()
    for rel in listed:
        if (
            isinstance(rel, str)
            and rel
            and not rel.startswith("/")
            and "\0" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/"))
        ):
            own.add(rel)
    return own


def check_output_record(path: Path, record: dict[str, Any], overwrite: bool) -> bool:
    """Refuse, without ``--overwrite``, a folder whose outputs another generator or other settings made.

    Returns True when the folder's outputs are about to be replaced by
    different ones (so the record must say so until the run completes).
    """
    old = read_output_record(path)
    if old is None:
        return False
    old = {k: v for k, v in old.items() if k != OUTPUTS}
    if old == record:
        return False
    if not overwrite:
        if old.get(REPLACING) and {k: v for k, v in old.items() if k != REPLACING} == record:
            raise file_error(
                path,
                "an earlier run that was replacing this folder's outputs did not finish rewriting them "
                "(it failed on some, or was stopped); pass --overwrite to remake them all",
            )
        changed = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in record.items() if old.get(k) != v) or "record incomplete"
        raise file_error(
            path,
            f"the outputs in this folder were made with another generator or settings ({changed}); "
            "pass --overwrite to replace them, or choose another output folder",
        )
    return True


def write_output_record(path: Path, record: dict[str, Any], replacing: bool = False) -> None:
    """Write the folder's record; ``replacing`` marks outputs of an earlier generator as possibly still present."""
    data = {**record, REPLACING: True} if replacing else record
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
