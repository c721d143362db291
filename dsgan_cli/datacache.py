"""Decoded training images cached on disk as one uint8 file per set, memory-mapped read-only.

Why: decoding tens of thousands of PNGs takes minutes and a RAM copy per
process multiplies the memory by the number of GPUs. Here a set is decoded
once into ``<key>.u8`` (raw uint8, shape (N, 3, S, S)) next to a small
``<key>.json`` (kept paths, skipped files, counts). Every process of every
later run or resume maps the same file read-only, so the operating system
keeps one copy of the pixels in its page cache for all of them.

The key is a SHA-256 over the cache format, the set's role, the image side,
the resize flag and every file's relative path and content hash: changing,
adding, removing or renaming an image, or changing ``hr_size``/``lr_size``,
selects a new cache file. Old entries are never deleted by the tool.

Before decoding, one fast pass reads every file once (hash + image header
only), so a wrong-size image stops the run in seconds, not after the decode.
The decode is written to a temporary file and renamed into place, metadata
last. Only a *writer* (the main process of each machine) ever decodes, under a
file lock, so two runs sharing a cache folder, or two machines sharing it over
a network filesystem, decode once; the other processes of a machine only scan
(which fails fast on a bad image just like the writer) and then wait for the
complete entry. No collective operation is involved, so a decode that takes
longer than the distributed backend's timeout is fine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from .data import ImageSet, _decode_one
from .errors import file_error
from .images import ImageReadError, image_size, open_regular, require_images, write_bytes_atomic

#: Bump when the cached bytes or the metadata change meaning.
CACHE_FORMAT = 1
#: Counts decodes in this process (tests check that a cached load decodes nothing).
DECODE_COUNTER = {"images": 0}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dsgan-cli/data`` (``~/.cache/dsgan-cli/data`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dsgan-cli" / "data"


def _scan_one(path: Path) -> tuple[str, tuple[int, int] | None]:
    """Content hash of ``path`` and its declared (width, height), or None when the header is unreadable."""
    with open_regular(path) as f:
        data = f.read()
    try:
        wh = image_size(path, data)  # header only: pixels are not decoded here
    except ImageReadError:  # unreadable files are skipped (with a warning) by the decode
        wh = None
    return hashlib.sha256(data).hexdigest(), wh


def _stat_sig(path: Path) -> list[int]:
    """(size, mtime in ns, inode): when all three are unchanged the file's hash is reused."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def scan_set(folder: str | Path, size: int, *, what: str, resize: bool, workers: int,
             memo: Path | None = None, save_memo: bool = False) -> tuple[list[Path], str]:
    """List a set, hash every file and check its size from the header; returns (paths, cache key).

    A wrong-size image is an error naming the file (unless ``resize``), found before any decode.
    ``memo`` is a JSON file of earlier results by (size, mtime, inode), as git's index does, so an
    unchanged file is neither read nor hashed again; ``save_memo`` rewrites it.
    """
    root = Path(folder)
    paths = require_images(root, what)
    old: dict = {}
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(memo.read_text(encoding="utf-8"))
    sigs = [_stat_sig(p) for p in paths]
    rels = [p.relative_to(root).as_posix() for p in paths]
    todo = [i for i, (rel, sig) in enumerate(zip(rels, sigs)) if old.get(rel, [None])[0] != sig]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashlib and file reads release the GIL
        fresh = dict(zip(todo, pool.map(lambda i: _scan_one(paths[i]), todo)))
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "what": what, "size": size, "resize": resize}).encode())
    new = {}
    for i, (path, rel, sig) in enumerate(zip(paths, rels, sigs)):
        digest, wh = fresh[i] if i in fresh else (old[rel][1], old[rel][2])
        if wh is not None and tuple(wh) != (size, size) and not resize:
            raise file_error(path, f"{what} image is {wh[0]}x{wh[1]}, expected {size}x{size} "
                                   "(set data.resize_mismatched = true to resize such images)")
        h.update(f"{rel}\0{digest}\n".encode())
        new[rel] = [sig, digest, wh]
    if memo is not None and save_memo and fresh:
        with contextlib.suppress(OSError):  # only a speed-up: a read-only cache folder is fine
            memo.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(memo, json.dumps(new).encode())
    return paths, h.hexdigest()


def scan_memo(cache_dir: Path, folder: str | Path) -> Path:
    """Where the scan results of ``folder`` are remembered inside ``cache_dir``."""
    return cache_dir / f".scan-{hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]}.json"


def _map(data_file: Path, meta: dict, size: int) -> torch.Tensor:
    """The cached pixels as a read-only uint8 tensor (N, 3, S, S) backed by the mapped file."""
    n = meta["count"]
    arr = np.memmap(data_file, dtype=np.uint8, mode="r", shape=(n, 3, size, size))
    with warnings.catch_warnings():  # torch warns that the array is read-only: that is the point
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _read_meta(meta_file: Path, data_file: Path, size: int) -> dict | None:
    """Metadata of a complete cache entry, or None when missing or inconsistent with the data file."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        complete = data_file.stat().st_size == meta["count"] * 3 * size * size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if complete else None


def _decode_into(paths: list[Path], root: Path, size: int, what: str, resize: bool, workers: int,
                 tmp: Path, progress) -> dict:
    """Decode ``paths`` in parallel into the raw file ``tmp``; returns the entry's metadata."""
    arr = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(paths), 3, size, size))
    kept, skipped, resized = [], [], 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL releases the GIL while decoding
        for path, (img, reason, was_resized) in zip(paths, pool.map(lambda p: _decode_one(p, size, resize, what), paths)):
            DECODE_COUNTER["images"] += 1
            if progress is not None:
                progress(1)
            if img is None:
                skipped.append([path.relative_to(root).as_posix(), reason or "unreadable"])
                continue
            arr[len(kept)] = img.transpose(2, 0, 1)
            kept.append(path.relative_to(root).as_posix())
            resized += was_resized
    arr.flush()
    del arr
    if len(kept) < len(paths):
        os.truncate(tmp, len(kept) * 3 * size * size)
    return {"format": CACHE_FORMAT, "what": what, "size": size, "count": len(kept), "paths": kept,
            "skipped": skipped, "resized": resized}


def _check_space(cache_dir: Path, need: int) -> None:
    """Refuse to start a decode that cannot fit on the cache's disk."""
    free = shutil.disk_usage(cache_dir).free
    if free < need:
        raise file_error(cache_dir, f"not enough free space for the decoded image cache ({need / 2**30:.2f} GiB needed, "
                                    f"{free / 2**30:.2f} GiB free); set data.cache_dir to another disk")


def cached_image_set(folder: str | Path, size: int, *, what: str, cache_dir: str | Path, resize: bool = False,
                     workers: int = 2, writer: bool = True, progress=None, scanned: tuple | None = None,
                     poll_s: float = 0.5) -> tuple[ImageSet, bool]:
    """The set's images from the cache, decoding once if needed; returns (set, decoded_by_this_process).

    ``scanned`` is :func:`scan_set`'s result when the caller scanned already (to check every set
    before decoding any). A non-``writer`` process waits (polling every ``poll_s`` seconds) until a
    writer has completed the entry. ``progress(total)`` is called when a decode starts and returns
    ``advance(n)``.
    """
    root, cache_dir = Path(folder), Path(cache_dir)
    paths, key = scanned or scan_set(root, size, what=what, resize=resize, workers=workers)
    data_file, meta_file = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    meta, decoded = _read_meta(meta_file, data_file, size), False
    if meta is None and writer:
        meta, decoded = _build(paths, root, size, what, resize, workers, cache_dir, key, progress)
    while meta is None:  # the writer of this machine is decoding (or the launcher will stop us if it failed)
        time.sleep(poll_s)
        meta = _read_meta(meta_file, data_file, size)
    skipped = [(root / p, r) for p, r in meta["skipped"]]
    if writer:
        _warn_skipped(skipped, what)
    return ImageSet(images=_map(data_file, meta, size), paths=[root / p for p in meta["paths"]], skipped=skipped,
                    resized=meta["resized"]), decoded


def _build(paths: list[Path], root: Path, size: int, what: str, resize: bool, workers: int, cache_dir: Path,
           key: str, progress) -> tuple[dict, bool]:
    """Decode the set into the cache under a file lock (unless another writer completed it meanwhile)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise file_error(cache_dir, f"cannot create the image cache folder ({e.strerror}); set data.cache_dir") from None
    data_file, meta_file = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    with FileLock(str(cache_dir / f".{key}.lock")):
        meta = _read_meta(meta_file, data_file, size)
        if meta is not None:
            return meta, False
        _check_space(cache_dir, len(paths) * 3 * size * size)
        tmp = cache_dir / f".{key}.{os.getpid()}.partial"
        try:
            meta = _decode_into(paths, root, size, what, resize, workers, tmp, progress(len(paths)) if progress else None)
            if not meta["count"]:
                first = meta["skipped"][0]
                raise file_error(root, f"none of the {len(paths)} {what} images could be read (first: {root / first[0]}: {first[1]})")
            os.replace(tmp, data_file)
            write_bytes_atomic(meta_file, json.dumps(meta).encode())  # written last: marks completeness
        finally:
            tmp.unlink(missing_ok=True)
    print(f"decoded {meta['count']} {what} images into the cache {data_file}", file=sys.stderr)
    return meta, True


def _warn_skipped(skipped: list[tuple[Path, str]], what: str) -> None:
    """Name the first few unreadable files on stderr."""
    for path, reason in skipped[:5]:
        print(f"warning: skipping unreadable {what} image {path}: {reason}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"warning: {len(skipped) - 5} more unreadable {what} images skipped", file=sys.stderr)
