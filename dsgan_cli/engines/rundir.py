"""The training run folder: one training at a time, explicit resume lineage, and what a resume must keep.

* A lock (``fcntl.flock`` on ``.dsgan-train.lock``) keeps a second training
  out of a folder in use; the OS drops it when the process dies, so a
  killed run never leaves a stale lock behind.
* Resuming from an older checkpoint moves the newer ones (an abandoned
  branch) aside into ``abandoned/``, so ``--resume latest`` follows the run
  that goes on. Nothing is deleted.
* A resume is compared with the run's first recipe (``recipe.json``) and
  data: changes that break exactness are refused, others are warned about.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..plumbing import writes
from ..plumbing.errors import file_error

LOCK_FILE = ".dsgan-train.lock"
ABANDONED = "abandoned"

#: Locks this process holds, by lock file identity: a second ``train()`` in one process reuses its own lock.
_held: dict[tuple[int, int], Any] = {}


def lock_run_folder(out: Path) -> None:
    """Hold an exclusive lock on the run folder ``out`` (which exists); refuse when another process holds it."""
    import fcntl

    path = out / LOCK_FILE
    f = writes.open_lock_file(path)
    st = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) in _held:
        f.close()
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise file_error(out, f"another training is running in this folder ({holder}); "
                              "wait for it to finish or choose another train.output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    _held[(st.st_dev, st.st_ino)] = f


def unlock_run_folder(out: Path) -> None:
    """Release this process's lock on ``out`` (the lock file stays; it holds no state)."""
    try:
        st = os.stat(out / LOCK_FILE)
    except OSError:
        return
    f = _held.pop((st.st_dev, st.st_ino), None)
    if f is not None:
        f.close()


def set_aside_newer(checkpoints: list[tuple[int, Path]], resume_step: int, out: Path) -> Path | None:
    """Move complete checkpoints newer than ``resume_step`` into ``out/abandoned/after_step_N[-k]``; return that folder."""
    newer = [p for step, p in checkpoints if step > resume_step]
    if not newer:
        return None
    base = out / ABANDONED / f"after_step_{resume_step:08d}"
    dest, k = base, 1
    while dest.exists():
        k += 1
        dest = base.with_name(f"{base.name}-{k}")
    writes.make_dirs(dest)
    for p in newer:
        writes.replace(p, dest / p.name)
    print(f"note: resuming from step {resume_step}: moved {len(newer)} newer checkpoint(s) of the abandoned branch "
          f"to {dest} (nothing deleted)", file=sys.stderr)
    return dest


def data_digest(*tensors) -> str:
    """SHA-256 over decoded image tensors: equal only for the same images in the same order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


#: Data keys a resume may change: the worker count, and the folders (their content is compared instead).
_SOFT_DATA = {"data.num_workers", "data.hr_dir", "data.lr_dir"}


def _breaks_exactness(key: str) -> bool:
    """Model and data settings decide what the checkpoint's weights mean; other keys only steer the rest of the run."""
    return key.startswith("model.") or (key.startswith("data.") and key not in _SOFT_DATA)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(out: Path, recipe: dict[str, Any], before: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume that changes the model, the data or the world size; warn on any other recipe change.

    ``before``/``now`` are the checkpoint's and this run's state (``world_size``, ``data_sha256``).
    """
    try:
        first = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        first = None
    changed = []
    if first is not None:
        old, new = _flat(first), _flat(recipe)
        # Keys in only one of them come from another package version (new keys take their defaults): not a change.
        changed = [k for k in sorted(set(old) & set(new)) if old[k] != new[k]]
    a, b = _flat(first or {}), _flat(recipe)
    hard = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in changed if _breaks_exactness(k)]
    if before.get("world_size") is not None and before["world_size"] != now.get("world_size"):
        hard.append(f"world size {before['world_size']} -> {now.get('world_size')}")
    if before.get("data_sha256") is not None and before["data_sha256"] != now.get("data_sha256"):
        hard.append("the images in data.hr_dir/data.lr_dir")
    if hard:
        what = ", ".join(hard)
        raise file_error(out, f"cannot resume exactly: {what} changed since the run began; "
                              "restore them, or start a new run in another train.output_dir")
    if changed:
        print(f"warning: resuming with changed {', '.join(changed)}; recipe.json keeps the run's first recipe",
              file=sys.stderr)
