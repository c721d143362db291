"""The training run folder: one training at a time, checkpoints, explicit resume lineage, and what a resume must keep.

* Checkpoints live in ``OUT/checkpoints/step_NNNNNNNN/``. Each is written into a
  hidden ``.step_NNNNNNNN.partial`` folder and renamed into place only when
  complete, and only folders holding ``trainer_state.json`` count, so a kill at
  any moment never leaves a checkpoint that looks complete but is not. The
  state lists every file's size and SHA-256, checked before a resume loads them.

* A lock (``filelock``'s native ``flock`` on ``.dsgan-train.lock``) keeps a
  second training out of a folder in use; the OS drops it when the process
  dies, so a killed run never leaves a stale lock behind.
* Resuming from an older checkpoint moves the newer ones (an abandoned
  branch) aside into ``abandoned/``, so ``--resume latest`` follows the run
  that goes on. Nothing is deleted.
* A resume is compared with the run's first recipe (``recipe.json``) and
  data: changes that break exactness are refused, others are warned about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..method.models import RetiredOptionError
from ..method.recipe import Recipe
from ..plumbing import writes
from ..plumbing.errors import DsganError, file_error
from ..plumbing.folder_lock import lock_folder, unlock_folder
from ..plumbing.reads import file_sha256
from ..plumbing.writes import check_writable_dir, write_bytes_atomic
from .checkpoint import GeneratorConfigError, generator_config, read_metadata, save_generator

CHECKPOINT_RE = re.compile(r"^step_(\d{8})$")
STATE_FILE = "trainer_state.json"

LOCK_FILE = ".dsgan-train.lock"
ABANDONED = "abandoned"


def lock_run_folder(out: Path) -> None:
    """Hold an exclusive lock on the run folder ``out`` (which exists); refuse when another process holds it
    (see :mod:`dsgan_cli.plumbing.folder_lock`, which every folder command shares). Reentrant within a process."""
    lock_folder(
        out,
        LOCK_FILE,
        None,
        "another training is running in this folder ({holder}); wait for it to finish or choose another train.output_dir",
        "the run folder",
    )


def unlock_run_folder(out: Path) -> None:
    """Release this process's lock on ``out`` (the lock file stays; it holds no state)."""
    unlock_folder(out)


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
    print(
        f"note: resuming from step {resume_step}: moved {len(newer)} newer checkpoint(s) of the abandoned branch "
        f"to {dest} (nothing deleted)",
        file=sys.stderr,
    )
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


def checkpoint_recipe(ckpt: Path) -> dict[str, Any] | None:
    """The recipe a checkpoint was saved with: its own (in its ``generator.safetensors``), else its run's first
    (``recipe.json`` of the run folder holding it); None when neither can be read."""
    with contextlib.suppress(DsganError, ValueError):
        recipe = json.loads(read_metadata(ckpt / "generator.safetensors").get("recipe") or "null")
        if isinstance(recipe, dict) and recipe:
            return recipe
    try:
        first = json.loads((ckpt.parent.parent / "recipe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return first if isinstance(first, dict) else None


def check_resume(out: Path, recipe: dict[str, Any], before: dict[str, Any], now: dict[str, Any], ckpt: Path | None = None) -> None:
    """Refuse a resume that changes the model, the data or the world size; warn on any other recipe change.

    ``before``/``now`` are the checkpoint's and this run's state (``world_size``, ``data_sha256``). The recipe is
    compared with the checkpoint's own (:func:`checkpoint_recipe`), wherever the checkpoint lives, else with the
    run's first (``out/recipe.json``).
    """
    first = checkpoint_recipe(ckpt) if ckpt is not None else None
    if first is None:
        try:
            first = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            first = None
    # A key the checkpoint's recipe lacks came after it: that version ran with the key's default (a new option's
    # default is the behaviour before it). Keys only the checkpoint has are retired: not a change.
    old, new = {**_flat(Recipe().to_dict()), **_flat(first or {})}, _flat(recipe)
    changed = [k for k in sorted(set(old) & set(new)) if old[k] != new[k]] if first is not None else []
    hard = [f"{k} {old[k]!r} -> {new[k]!r}" for k in changed if _breaks_exactness(k)]
    if before.get("world_size") is not None and before["world_size"] != now.get("world_size"):
        hard.append(f"world size {before['world_size']} -> {now.get('world_size')}")
    if before.get("data_sha256") is not None and before["data_sha256"] != now.get("data_sha256"):
        hard.append("the images in data.hr_dir/data.lr_dir")
    if hard:
        what = ", ".join(hard)
        raise file_error(
            out,
            f"cannot resume exactly: {what} changed since the checkpoint was saved; "
            "restore them, or start a new run in another train.output_dir",
        )
    if changed:
        print(f"warning: resuming with changed {', '.join(changed)}; recipe.json keeps the run's first recipe", file=sys.stderr)


def complete_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first; temp and half-written folders are ignored."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint folder to resume from, or None for a fresh run; refuses to train over an old run."""
    ckpt_root = output_dir / "checkpoints"
    if resume is None:
        existing = complete_checkpoints(ckpt_root)
        if existing:
            raise file_error(
                output_dir,
                f"already holds a training run ({existing[-1][1].name}); "
                "use --resume latest to continue it, or choose another train.output_dir",
            )
        return None
    if resume == "latest":
        existing = complete_checkpoints(ckpt_root)
        if not existing:
            raise file_error(ckpt_root, "no complete checkpoint to resume from (--resume latest)")
        return existing[-1][1]
    path = Path(resume)
    if not path.is_dir():
        raise file_error(path, "checkpoint folder not found (--resume PATH expects a checkpoints/step_... folder)")
    if not (path / STATE_FILE).is_file():
        raise file_error(path, f"not a complete training checkpoint (no {STATE_FILE})")
    return path


def read_state(ckpt: Path) -> dict:
    """The small JSON state of a checkpoint (step, data position, counts), checked before anything trusts it."""
    path = ckpt / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise file_error(path, f"unreadable training state ({e})") from None
    problem = state_problem(state, ckpt.name)
    if problem:
        raise file_error(path, f"not a valid training state: {problem}")
    return state


def state_problem(state, folder: str) -> str | None:
    """What is wrong with a trainer state read from folder ``folder`` (types, bounds, its step), or None."""
    if not isinstance(state, dict):
        return "not a JSON object"
    step = state.get("step")
    if type(step) is not int or step < 0:
        return f"step {step!r} is not a whole number >= 0"
    m = CHECKPOINT_RE.match(folder)
    if m and int(m.group(1)) != step:
        return f"step {step} does not match its folder {folder}"
    for key in ("world_size", "batch_size", "grad_accum"):
        v = state.get(key)
        if v is not None and (type(v) is not int or v < 1):
            return f"{key} {v!r} is not a whole number >= 1"
    data = state.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("sha256", ""), (str, type(None))):
        return "data is not an object with a sha256 text"
    files = state.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(name, str)
        and "/" not in name
        and isinstance(f, dict)
        and type(f.get("size")) is int
        and isinstance(f.get("sha256"), str)
        for name, f in files.items()
    ):
        return "files is not a list of plain file names with size and sha256"
    return None


def file_digests(folder: Path) -> dict[str, dict]:
    """{name: {size, sha256}} of every file directly in ``folder`` (a checkpoint's manifest)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name != STATE_FILE:
            out[p.name] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return out


def verify_checkpoint_files(ckpt: Path, state: dict, world_size: int) -> None:
    """Refuse a checkpoint whose files are missing, truncated or changed since it was saved.

    Accelerate skips RNG states it cannot read with only a log line, so a damaged ``random_states_N.pkl``
    would let a resume go on silently with another random stream. Checkpoints from before the manifest
    existed are checked for the files that must be there.
    """
    files = state.get("files")
    if files is None:
        files = {f"random_states_{i}.pkl": None for i in range(min(world_size, state.get("world_size") or world_size))}
    for name, want in files.items():
        p = ckpt / name
        if p.is_symlink() or not p.is_file():
            raise file_error(p, "missing from the checkpoint; resume from another checkpoint (--resume PATH)")
        if want is not None:
            size = p.stat().st_size
            if size != want["size"] or file_sha256(p) != want["sha256"]:
                raise file_error(
                    p,
                    f"truncated or changed since the checkpoint was saved ({size} bytes, "
                    f"saved {want['size']}); resume from another checkpoint (--resume PATH)",
                )


def save_checkpoint(accelerator, output_dir: Path, step: int, G, recipe: Recipe, state: dict) -> Path:
    """Write the full training state for ``step`` atomically; prune to keep_last; export generator.safetensors
    (``G`` is the network to export: the trained one, or its moving average)."""
    ckpt_root = output_dir / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".{final.name}.partial"
    main = accelerator.is_main_process
    if main:
        writes.remove_own(tmp)
        writes.make_dirs(tmp)
    accelerator.wait_for_everyone()
    # Every rank writes its part (its RNG state), then the main process the rest; after each phase all ranks
    # agree on whether it worked, so a failure on one never leaves the others waiting at a barrier.
    error = agreed(accelerator, attempt(lambda: writes.save_accelerator_state(accelerator, tmp)))
    if error is None and main:
        g = accelerator.unwrap_model(G)
        meta = dict(step=step, scale=recipe.data.scale, recipe=recipe.to_dict())

        def write_main_files() -> None:
            save_generator(g, tmp / "generator.safetensors", **meta)
            checked = {**state, "files": file_digests(tmp)}
            write_bytes_atomic(tmp / STATE_FILE, json.dumps(checked, indent=2).encode())  # last: marks completeness
            save_generator(g, output_dir / "generator.safetensors", **meta)

        error = attempt(write_main_files)
    error = agreed(accelerator, error)
    if error is not None:
        if main:
            writes.remove_own(tmp)  # a partial folder would keep a full disk full
        raise checkpoint_write_error(tmp, error)
    if main:
        if final.exists():  # re-saving a step after resuming from an older checkpoint
            old = ckpt_root / f".{final.name}.old"
            writes.remove_own(old)
            writes.replace(final, old)
            writes.replace(tmp, final)
            writes.remove_own(old)
        else:
            writes.replace(tmp, final)
        for _, old_ckpt in complete_checkpoints(ckpt_root)[: -recipe.train.keep_last]:
            writes.remove_own(old_ckpt)
    accelerator.wait_for_everyone()
    return final


def attempt(write) -> Exception | None:
    """Run ``write()``; the OSError or RuntimeError (torch's zip writer on a full disk) it raised, or None."""
    try:
        write()
    except (OSError, RuntimeError) as e:
        return e
    return None


class FailedElsewhere(RuntimeError):
    """Another process could not write its part of the checkpoint (it names the reason itself)."""


def agreed(accelerator, error: Exception | None) -> Exception | None:
    """This rank's error, or (when this rank succeeded) a :class:`FailedElsewhere` if any other rank failed."""
    if accelerator.num_processes == 1:
        return error
    flag = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
    if float(accelerator.reduce(flag, reduction="sum").item()) > 0 and error is None:
        return FailedElsewhere("another process failed")
    return error


def checkpoint_write_error(dest: Path, e: Exception) -> DsganError:
    """The one-line error for a checkpoint that could not be written (a full disk shows up as an OSError, or
    as torch's "unexpected pos" RuntimeError from its zip writer)."""
    try:
        free = f"{shutil.disk_usage(dest.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return file_error(
        dest.parent,
        f"cannot write the checkpoint ({first}; {free}): free some space or choose another train.output_dir, then --resume latest",
    )


def start_run(
    out: Path, resume: str | None, resume_from: Path | None, start_step: int, recipe: Recipe, hr_set, lr_set, world_size: int
) -> str:
    """Main process: check, create and lock the run folder, check a resume against the run, set aside an abandoned branch.

    Returns the data digest. Checks that need no folder run first, so a failing run creates nothing.
    """
    from ..method.losses import check_perceptual_weights

    if recipe.loss.w_perceptual > 0:
        check_perceptual_weights(recipe.perceptual.weights, recipe.perceptual.net)
    check_writable_dir(out)
    lock_run_folder(out)
    if resolve_resume(resume, out) != resume_from:
        raise file_error(out, "another training changed this folder while this one started; run the command again")
    digest = data_digest(hr_set.images, lr_set.images)
    if resume_from is not None:
        state = read_state(resume_from)
        before = {"world_size": state.get("world_size"), "data_sha256": state.get("data", {}).get("sha256")}
        check_resume(out, recipe.to_dict(), before, {"world_size": world_size, "data_sha256": digest}, resume_from)
        set_aside_newer(complete_checkpoints(out / "checkpoints"), start_step, out)
    return digest


def stored_generator_config(resume_from: Path):
    """The generator configuration a checkpoint's generator file carries, or None for older checkpoints (no file,
    or no configuration in it: their recipe was compared already)."""
    path = resume_from / "generator.safetensors"
    try:
        raw = read_metadata(path)
    except DsganError:
        return None
    if "generator_config" not in raw:
        return None
    try:
        return generator_config(raw, {})
    except (GeneratorConfigError, RetiredOptionError) as e:
        raise file_error(path, f"cannot resume from it ({e})") from None


def check_generator_config(resume_from: Path, config) -> None:
    """Refuse a resume whose generator differs from the one the checkpoint's generator file carries (a model
    option, or the JPEG quality read off the real LR), naming the first option that differs."""
    path = resume_from / "generator.safetensors"
    stored = stored_generator_config(resume_from)
    if stored is None:
        return
    for name, value in dataclasses.asdict(stored).items():
        if getattr(config, name) != value:
            raise file_error(path, f"cannot resume: its generator has {name}={value!r}, this run builds {name}={getattr(config, name)!r}")


def load_resume(accelerator, resume_from: Path, r: Recipe, start_step: int, config) -> None:
    """Restore the full training state (weights, Adam moments, RNGs) of a generator built from ``config``;
    warn when the data order will differ."""
    verify_checkpoint_files(resume_from, read_state(resume_from), accelerator.num_processes)
    check_generator_config(resume_from, config)
    try:
        accelerator.load_state(str(resume_from))
    except Exception as e:  # noqa: BLE001 - wrong architecture, truncated files...
        raise file_error(resume_from, f"cannot load checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    accelerator.print(f"resumed from {resume_from} at step {start_step}")
    before = read_state(resume_from)
    now = {"world_size": accelerator.num_processes, "batch_size": r.train.batch_size, "grad_accum": r.train.grad_accum}
    changed = [f"{k} {before.get(k)} -> {v}" for k, v in now.items() if before.get(k) != v]
    if changed and accelerator.is_main_process:
        print(
            f"warning: {', '.join(changed)} since the checkpoint: training continues, but the data order differs from an uninterrupted run",
            file=sys.stderr,
        )


def checkpoint_state(done: int, r: Recipe, world_size: int, counts: dict, digest: str | None) -> dict:
    """The small JSON state saved with a checkpoint (its file manifest is added when it is written)."""
    return {
        "step": done,
        "seed": r.train.seed,
        "world_size": world_size,
        "batch_size": r.train.batch_size,
        "grad_accum": r.train.grad_accum,
        "micro_batches_consumed": done * r.train.grad_accum,
        "dsgan_version": __version__,
        "data": {"counts": counts, "sha256": digest},
    }
