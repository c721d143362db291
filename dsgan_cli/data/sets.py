"""The training sets: every image of the HR and real-LR folders decoded ONCE, up front, into uint8.

Aligned faces are small (a 256x256 HR face is 192 KiB, 10,000 of them 1.9 GiB), so a set is one
uint8 tensor in RAM, or memory-mapped from the shared cache (:mod:`.datacache`); sampling them is
:mod:`.sampling`'s job.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..plumbing.errors import DsganError, file_error
from .images import decode_square, require_images


@dataclass
class ImageSet:
    """A decoded image set: ``images`` is uint8 (N, 3, S, S); ``skipped`` lists unreadable files."""

    images: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    resized: int = 0


def load_image_set(folder: str | Path, size: int, *, what: str, resize: bool = False, workers: int = 2, progress=None) -> ImageSet:
    """Decode every image under ``folder`` into a uint8 tensor (N, 3, size, size).

    Unreadable files are skipped with a warning and counted; a wrong size is
    an error naming the file unless ``resize``. ``progress`` is an optional
    callable ``advance(n)`` for a progress bar.
    """
    paths = require_images(folder, what)
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    resized = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # PIL releases the GIL while decoding, so threads give real parallelism here.
        for path, (arr, reason, was_resized) in zip(paths, pool.map(lambda p: decode_square(p, size, resize, what), paths)):
            if progress is not None:
                progress(1)
            if arr is None:
                skipped.append((path, reason or "unreadable"))
                continue
            out[len(kept)] = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)
            kept.append(path)
            resized += was_resized
    for path, reason in skipped[:5]:
        print(f"warning: skipping unreadable {what} image {path}: {reason}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"warning: {len(skipped) - 5} more unreadable {what} images skipped", file=sys.stderr)
    if not kept:
        raise file_error(folder, f"none of the {len(paths)} {what} images could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    return ImageSet(images=out[: len(kept)].clone() if len(kept) < len(paths) else out, paths=kept, skipped=skipped, resized=resized)


def check_data_dirs(hr_dir: str | Path, lr_dir: str | Path, hr_size: int | None = None, lr_size: int | None = None) -> None:
    """Refuse missing or identical HR and LR folders; a missing one names the ``prepare`` command that makes it."""
    for key, folder, size, raw in (("hr_dir", hr_dir, hr_size, "RAW_CLEAN_PHOTOS"), ("lr_dir", lr_dir, lr_size, "RAW_REAL_PHOTOS")):
        if not Path(folder).exists():
            how = f"dsgan prepare {raw} --out {folder}" + (f" --size {size}" if size else "")
            raise DsganError(f"{folder}: no such folder (data.{key}); make it with `{how}`, or set data.{key}")
    if Path(hr_dir).resolve() == Path(lr_dir).resolve():
        raise DsganError(f"{hr_dir}: data.hr_dir and data.lr_dir are the same folder; DSGAN needs clean HR and real LR sets")
