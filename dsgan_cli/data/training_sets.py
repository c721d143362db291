"""The recipe's two training sets (clean HR, real LR) as uint8 tensors, decoded once into the shared cache."""

from __future__ import annotations

import os
from pathlib import Path

from ..method.recipe import Recipe
from ..plumbing.progress import progress_bar
from .datacache import CacheRole, cached_image_set, default_cache_dir, scan_memo, scan_set
from .images import require_images
from .sets import check_data_dirs, load_image_set


def load_data(recipe: Recipe, show: bool, writer: bool = True):
    """Both image sets as uint8 tensors, via the shared memory-mapped cache (see :mod:`dsgan_cli.data.datacache`).

    Only a ``writer`` (the main process of each machine) decodes; the others wait for its cache.
    """
    d = recipe.data
    check_data_dirs(d.hr_dir, d.lr_dir, d.hr_size, d.lr_size)
    workers = max(1, d.num_workers or (os.cpu_count() or 1))
    sets = (("HR", d.hr_dir, d.hr_size), ("real LR", d.lr_dir, d.lr_size))
    with progress_bar(show, transient=True) as bar:

        def progress(what: str):
            def start(total: int):
                task = bar.add_task(f"decoding {what} images", total=total)
                return lambda n: bar.advance(task, n)

            return start

        if d.cache_dir == "none":
            return tuple(
                load_image_set(
                    folder,
                    size,
                    what=what,
                    resize=d.resize_mismatched,
                    workers=workers,
                    progress=progress(what)(len(require_images(folder, what))),
                )
                for what, folder, size in sets
            )
        cache = Path(d.cache_dir) if d.cache_dir else default_cache_dir()
        # Both sets are checked (hashes, sizes from the headers) before either is decoded.
        scans = [
            scan_set(folder, size, what=what, resize=d.resize_mismatched, workers=workers, memo=scan_memo(cache, folder), save_memo=writer)
            for what, folder, size in sets
        ]
        return tuple(
            cached_image_set(
                folder,
                size,
                what=what,
                cache_dir=cache,
                resize=d.resize_mismatched,
                scanned=scan,
                role=CacheRole(writer=writer, workers=workers, progress=progress(what)),
            )[0]
            for (what, folder, size), scan in zip(sets, scans)
        )
