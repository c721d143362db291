"""Decoded training images cached on disk as one uint8 file per set, memory-mapped read-only.

Why: decoding tens of thousands of PNGs takes minutes and a RAM copy per
process multiplies the memory by the number of GPUs. Here a set is decoded
once into ``<key>.u8`` (raw uint8, shape (N, 3, S, S)) next to a small
``<key>.json`` (kept paths, skipped files, counts). Every process of every
later run or resume maps the same file read-only, so the operating system
keeps one copy of the pixels in its page cache for all of them. ``dsgan eval``
stores its sets the same way (:func:`cached_decode`: any image sizes, brought to
one (W, H) by its own decode, which is named in the key).

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..plumbing import writes
from ..plumbing.errors import DsganError, file_error
from ..plumbing.reads import file_sha256, open_regular
from ..plumbing.writes import write_bytes_atomic
from .images import ImageReadError, decode_square, image_size, require_images
from .sets import ImageSet

#: Bump when the cached bytes or the metadata change meaning.
CACHE_FORMAT = 1
#: Counts decodes in this process (tests check that a cached load decodes nothing).
DECODE_COUNTER = {"images": 0}


def user_cache_dir(kind: str) -> Path:
    """``$XDG_CACHE_HOME/dsgan-cli/KIND`` (``~/.cache/dsgan-cli/KIND`` by default): every cache of the tool lives there."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dsgan-cli" / kind


def default_cache_dir() -> Path:
    """The decoded-image cache: ``user_cache_dir("data")``."""
    return user_cache_dir("data")


def _scan_one(path: Path) -> tuple[str, tuple[int, int] | None]:
    """Content hash of ``path`` and its declared (width, height), or None when the header is unreadable."""
    try:
        with open_regular(path) as fh:  # a FIFO or device is refused, never read (it could block forever)
            data = fh.read()
    except OSError as e:  # the decode skips such a file with its reason; the key still names it
        return f"unreadable: {e.strerror or e}", None
    try:
        wh = image_size(path, data)  # header only: pixels are not decoded here
    except ImageReadError:  # unreadable files are skipped (with a warning) by the decode
        wh = None
    return hashlib.sha256(data).hexdigest(), wh


def _stat_sig(path: Path) -> list[int] | None:
    """(size, mtime, inode, ctime): when all are unchanged the file's hash is reused; None (never reused)
    if unstat-able. The ctime is git's safeguard too: ``cp -p`` or ``rsync --inplace`` can rewrite a file
    keeping its size, mtime and inode, but cannot set its ctime."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _memo_entry_ok(entry) -> bool:
    """Whether a scan-memo entry has the shape ``scan_set`` writes: [signature, sha256 hex, [w, h] or None]."""
    if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], list)):
        return False
    digest, wh = entry[1], entry[2]
    return (
        isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
        and (wh is None or (isinstance(wh, list) and len(wh) == 2 and all(type(v) is int and v > 0 for v in wh)))
    )


def scan_set(
    folder: str | Path,
    size: int | tuple[int, int],
    *,
    what: str,
    resize: bool,
    workers: int,
    memo: Path | None = None,
    save_memo: bool = False,
    variant: str | None = None,
) -> tuple[list[Path], str]:
    """List a set, hash every file and check its size from the header; returns (paths, cache key).

    ``size`` is the side S of square images, or (W, H). A wrong-size image is an error naming the
    file (unless ``resize``), found before any decode. ``memo`` is a JSON file of earlier results by
    (size, mtime, inode, ctime), as git's index does, so an unchanged file is neither read nor hashed again;
    ``save_memo`` rewrites it. ``variant`` names a decode other than training's; it replaces the
    set's role in the key, so the same folder decoded the same way shares one entry.
    """
    root = Path(folder)
    paths = require_images(root, what)
    old: dict = {}
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(memo.read_text(encoding="utf-8"))
    sigs = [_stat_sig(p) for p in paths]
    rels = [p.relative_to(root).as_posix() for p in paths]
    if not isinstance(old, dict):
        old = {}
    # A memo is only a speed-up: an entry that is not what this function writes is ignored (the file is hashed).
    old = {rel: e for rel, e in old.items() if _memo_entry_ok(e)}
    todo = [i for i, (rel, sig) in enumerate(zip(rels, sigs)) if sig is None or old.get(rel, [None])[0] != sig]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashlib and file reads release the GIL
        fresh = dict(zip(todo, pool.map(lambda i: _scan_one(paths[i]), todo)))
    role = {"variant": variant} if variant else {"what": what}
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **role, "size": size, "resize": resize}).encode())
    expected = _wh(size)
    new = {}
    for i, (path, rel, sig) in enumerate(zip(paths, rels, sigs)):
        digest, wh = fresh[i] if i in fresh else (old[rel][1], old[rel][2])
        if wh is not None and tuple(wh) != expected and not resize:
            raise file_error(
                path,
                f"{what} image is {wh[0]}x{wh[1]}, expected {expected[0]}x{expected[1]} "
                "(set data.resize_mismatched = true to resize such images)",
            )
        h.update(f"{rel}\0{digest}\n".encode())
        new[rel] = [sig, digest, wh]
    if memo is not None and save_memo and fresh:
        with contextlib.suppress(OSError, DsganError):  # only a speed-up: a read-only cache folder is fine
            writes.make_dirs(memo.parent)
            write_bytes_atomic(memo, json.dumps(new).encode())
    return paths, h.hexdigest()


def scan_memo(cache_dir: Path, folder: str | Path) -> Path:
    """Where the scan results of ``folder`` are remembered inside ``cache_dir``."""
    return cache_dir / f".scan-{hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:32]}.json"


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    """(W, H) of a square side S or of a (W, H) pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _nbytes(count: int, size: int | tuple[int, int]) -> int:
    """Bytes of ``count`` uint8 RGB images of ``size``."""
    w, h = _wh(size)
    return count * 3 * w * h


def _map(data_file: Path, meta: dict, size: int | tuple[int, int]) -> torch.Tensor:
    """The cached pixels as a read-only uint8 tensor (N, 3, H, W) backed by the mapped file."""
    w, h = _wh(size)
    arr = np.memmap(data_file, dtype=np.uint8, mode="r", shape=(meta["count"], 3, h, w))
    with warnings.catch_warnings():  # torch warns that the array is read-only: that is the point
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _read_meta(meta_file: Path, data_file: Path, size: int | tuple[int, int], warn: bool = True) -> dict | None:
    """Metadata of a complete, intact cache entry, or None (rebuild it) when missing, malformed, or when the
    pixels are not the ones decoded (a data file overwritten in place keeps its size; the digest tells).

    The digest is recomputed only when the data file's (size, mtime, inode, ctime) differ from those recorded
    after it was written: a multi-gigabyte cache is not re-read by every process on every start, and a file
    rewritten in place cannot keep its ctime."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        ok = (
            isinstance(meta, dict)
            and type(meta.get("count")) is int
            and meta["count"] >= 0
            and isinstance(meta.get("paths"), list)
            and len(meta["paths"]) == meta["count"]
            and all(isinstance(p, str) for p in meta["paths"])
            and isinstance(meta.get("skipped"), list)
            and all(isinstance(e, list) and len(e) == 2 and all(isinstance(v, str) for v in e) for e in meta["skipped"])
            and isinstance(meta.get("pixels_sha256"), str)
            and data_file.stat().st_size == _nbytes(meta["count"], size)
        )
        if ok and meta.get("pixels_stat") != _stat_sig(data_file) and file_sha256(data_file) != meta["pixels_sha256"]:
            ok = False
            if warn:
                print(f"warning: {data_file}: the cached pixels changed since they were decoded; decoding again", file=sys.stderr)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if ok else None


def _decode_into(paths: list[Path], root: Path, size: int | tuple[int, int], decode, workers: int, tmp: Path, progress) -> dict:
    """Decode ``paths`` in parallel with ``decode`` into the raw file ``tmp``; returns the entry's metadata.

    ``decode(path)`` gives (uint8 (H, W, 3) array or None, skip reason, {flag: bool}); the metadata
    counts each flag over the kept images (e.g. "resized").
    """
    w, h = _wh(size)
    arr = writes.create_mapped(tmp, (len(paths), 3, h, w))
    kept, skipped, counts = [], [], {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL releases the GIL while decoding
        for path, (img, reason, flags) in zip(paths, pool.map(decode, paths)):
            DECODE_COUNTER["images"] += 1
            if progress is not None:
                progress(1)
            if img is None:
                skipped.append([path.relative_to(root).as_posix(), reason or "unreadable"])
                continue
            arr[len(kept)] = img.transpose(2, 0, 1)
            kept.append(path.relative_to(root).as_posix())
            for flag, value in flags.items():
                counts[flag] = counts.get(flag, 0) + bool(value)
    arr.flush()
    del arr
    if len(kept) < len(paths):
        writes.truncate(tmp, _nbytes(len(kept), size))
    return {"format": CACHE_FORMAT, "count": len(kept), "paths": kept, "skipped": skipped, "pixels_sha256": file_sha256(tmp), **counts}


def _check_space(cache_dir: Path, need: int) -> None:
    """Refuse to start a decode that cannot fit on the cache's disk."""
    free = shutil.disk_usage(cache_dir).free
    if free < need:
        raise file_error(
            cache_dir,
            f"not enough free space for the decoded image cache ({need / 2**30:.2f} GiB needed, "
            f"{free / 2**30:.2f} GiB free); set data.cache_dir to another disk",
        )


@dataclass(frozen=True)
class CacheRole:
    """How one process takes part in a set's cache entry."""

    writer: bool = True  # decodes a missing entry (the main process of each machine); the others wait for it
    workers: int = 2  # threads that hash and decode the files
    progress: Callable[[int], Callable[[int], None]] | None = None  # progress(total), when a decode starts -> advance(n)
    poll_s: float = 0.5  # how often a waiting process looks for the writer's complete entry


@dataclass(frozen=True)
class Entry:
    """One cache entry in ``cache_dir``: the raw pixels ``<key>.u8`` and their metadata ``<key>.json``."""

    cache_dir: Path
    key: str

    @property
    def data_file(self) -> Path:
        return self.cache_dir / f"{self.key}.u8"

    @property
    def meta_file(self) -> Path:
        return self.cache_dir / f"{self.key}.json"


def cached_image_set(
    folder: str | Path,
    size: int,
    *,
    what: str,
    cache_dir: str | Path,
    resize: bool = False,
    scanned: tuple | None = None,
    role: CacheRole = CacheRole(),
) -> tuple[ImageSet, bool]:
    """The set's images from the cache, decoding once if needed; returns (set, decoded_by_this_process).

    ``scanned`` is :func:`scan_set`'s result when the caller scanned already (to check every set
    before decoding any). ``role`` is this process's part: a non-``writer`` process waits (polling every ``poll_s`` seconds) until a
    writer has completed the entry; ``progress(total)`` is called when a decode starts and returns
    ``advance(n)``.
    """
    root = Path(folder)
    paths, key = scanned or scan_set(root, size, what=what, resize=resize, workers=role.workers)
    entry = Entry(Path(cache_dir), key)
    meta, decoded = _read_meta(entry.meta_file, entry.data_file, size), False
    if meta is None and role.writer:

        def decode(p: Path):
            img, reason, was_resized = decode_square(p, size, resize, what)
            return img, reason, {"resized": was_resized}

        meta, decoded = _build(entry, paths, root, size, what, decode, role.workers, role.progress)
        if decoded:
            print(f"decoded {meta['count']} {what} images into the cache {entry.data_file}", file=sys.stderr)
    while meta is None:  # the writer of this machine is decoding (or the launcher will stop us if it failed)
        time.sleep(role.poll_s)
        meta = _read_meta(entry.meta_file, entry.data_file, size, warn=False)
    skipped = [(root / p, r) for p, r in meta["skipped"]]
    if role.writer:
        _warn_skipped(skipped, what)
    return ImageSet(
        images=_map(entry.data_file, meta, size), paths=[root / p for p in meta["paths"]], skipped=skipped, resized=meta.get("resized", 0)
    ), decoded


def cached_decode(
    folder: str | Path, size: tuple[int, int], *, what: str, variant: str, decode, cache_dir: str | Path, workers: int = 2, progress=None
) -> tuple[ImageSet, dict]:
    """Any-size images of ``folder`` brought to ``size`` = (W, H) by ``decode``, through the cache; returns (set, metadata).

    For readers of whole sets other than training (``dsgan eval``): ``variant`` names the decode
    (it is part of the key), ``decode(path)`` is as in :func:`_decode_into`. The metadata holds
    the flag counts and ``decoded`` (True when this call decoded). Skipped files are returned, not printed.
    """
    root, cache_dir = Path(folder), Path(cache_dir)
    paths, key = scan_set(
        root, size, what=what, resize=True, workers=workers, variant=variant, memo=scan_memo(cache_dir, root), save_memo=True
    )
    entry = Entry(cache_dir, key)
    meta, decoded = _read_meta(entry.meta_file, entry.data_file, size), False
    if meta is None:
        meta, decoded = _build(entry, paths, root, size, what, decode, workers, progress)
    image_set = ImageSet(
        images=_map(entry.data_file, meta, size),
        paths=[root / p for p in meta["paths"]],
        skipped=[(root / p, r) for p, r in meta["skipped"]],
        resized=meta.get("resized", 0),
    )
    return image_set, {**meta, "key": key, "decoded": decoded}


def _build(
    entry: Entry, paths: list[Path], root: Path, size: int | tuple[int, int], what: str, decode, workers: int, progress
) -> tuple[dict, bool]:
    """Decode the set into the cache ``entry`` under a file lock (unless another writer completed it meanwhile)."""
    cache_dir, key, data_file, meta_file = entry.cache_dir, entry.key, entry.data_file, entry.meta_file
    try:
        writes.make_dirs(cache_dir)
    except OSError as e:
        raise file_error(cache_dir, f"cannot create the image cache folder ({e.strerror}); set data.cache_dir") from None
    with writes.file_lock(cache_dir / f".{key}.lock"):
        meta = _read_meta(meta_file, data_file, size, warn=False)
        if meta is not None:
            return meta, False
        _check_space(cache_dir, _nbytes(len(paths), size))
        tmp = cache_dir / f".{key}.{os.getpid()}.partial"
        try:
            meta = {
                "what": what,
                "size": size,
                **_decode_into(paths, root, size, decode, workers, tmp, progress(len(paths)) if progress else None),
            }
            if not meta["count"]:
                first = meta["skipped"][0]
                raise file_error(
                    root, f"no readable image: none of the {len(paths)} {what} images could be read (first: {root / first[0]}: {first[1]})"
                )
            writes.replace(tmp, data_file)
            meta["pixels_stat"] = _stat_sig(data_file)  # after the rename, which changes the ctime
            write_bytes_atomic(meta_file, json.dumps(meta).encode())  # written last: marks completeness
        finally:
            writes.remove_own(tmp)
    return meta, True


def _warn_skipped(skipped: list[tuple[Path, str]], what: str) -> None:
    """Name the first few unreadable files on stderr."""
    for path, reason in skipped[:5]:
        print(f"warning: skipping unreadable {what} image {path}: {reason}", file=sys.stderr)
    if len(skipped) > 5:
        print(f"warning: {len(skipped) - 5} more unreadable {what} images skipped", file=sys.stderr)
