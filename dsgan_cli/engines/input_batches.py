"""The input side of the inference engine: images decoded and downscaled ahead of G, then grouped into batches.

Decoding runs in DataLoader worker processes, or in one background thread when ``workers=0``
(:func:`in_thread`); images of one size are stacked into batches, large ones passed on alone to be tiled.
A file that cannot be read becomes an event naming its reason, never an exception.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..data.images import ImageReadError, image_to_tensor, load_rgb, to_uint8
from ..method.models import downscale

#: Upper bound on LR pixels per batch, so a batch of large images stays within memory.
BATCH_PIXEL_BUDGET = 2**20


def pair_hr(x: torch.Tensor, scale: int, cleanup_factor: int) -> torch.Tensor:
    """The HR of a training pair from one (1, 3, H, W) image: cleaned up (downscaled by ``cleanup_factor`` and
    quantised to 8 bits, as the trainer will read it), then cropped at the bottom/right to a multiple of ``scale``."""
    if cleanup_factor > 1:
        x = image_to_tensor(to_uint8(downscale(x, cleanup_factor)[0]).numpy()).unsqueeze(0)
    h, w = x.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"too small: {w}x{h} after clean-up is smaller than the scale {scale}")
    return x[:, :, : h - h % scale, : w - w % scale]


class DecodeDataset(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, Xb or None, converted_from_mode, error_reason, HR uint8 or None)``; never raises for bad files.

    With ``pairs`` the image is first made into a pair's HR (:func:`pair_hr`), returned as uint8 (H, W, 3).
    """

    def __init__(self, sources: list[Path], scale: int, pairs: bool = False, cleanup_factor: int = 1):
        self.sources = sources
        self.scale = scale
        self.pairs = pairs
        self.cleanup_factor = cleanup_factor

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, str | None, torch.Tensor | None]:
        try:
            img, mode = load_rgb(self.sources[i])
            x = image_to_tensor(img).unsqueeze(0)
            hr = pair_hr(x, self.scale, self.cleanup_factor) if self.pairs else None
        except ImageReadError as e:
            return i, None, None, e.reason, None
        except OSError as e:  # e.g. a file vanished between listing and reading
            return i, None, None, e.strerror or str(e), None
        except ValueError as e:  # too small for the scale
            return i, None, None, str(e), None
        if hr is not None:
            x = hr
        return i, downscale(x, self.scale)[0].contiguous(), mode, None, None if hr is None else to_uint8(hr[0])


def _first(sample):
    """Collate for ``batch_size=None``: pass the sample through unchanged."""
    return sample


def in_thread(make_iter, depth: int, name: str = "dsgan-input") -> Iterator[Any]:
    """Yield the items of ``make_iter()``, produced by a background thread up to ``depth`` ahead.

    Closing the generator (or an error on either side) stops the thread and
    waits for it, so no input thread outlives the run.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        # A timeout, not a plain put: a consumer that stopped never frees a slot.
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                q.put(item, timeout=0.05)
                return True
        return False

    def produce() -> None:
        items = None
        try:
            items = make_iter()
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(e)
        finally:
            getattr(items, "close", lambda: None)()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        thread.join()


def iter_decoded(dataset: DecodeDataset, workers: int, depth: int) -> Iterator[Any]:
    """Decoded items in order: from DataLoader worker processes, or in the calling thread when ``workers == 0``."""
    if workers <= 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_first,
        prefetch_factor=max(2, math.ceil(depth / workers)),
        persistent_workers=False,
    )
    it = iter(loader)
    try:
        yield from it
    finally:
        getattr(it, "_shutdown_workers", lambda: None)()  # stop the worker processes now, not when collected


def iter_batches(items: Iterator[Any], batch_size: int, tile: int | None, channels_last: bool) -> Iterator[tuple]:
    """Group decoded items into same-size batches.

    Yields ``("failed", i, reason)``, ``("mode", mode)``, ``("tiled", [i], x, [hr])``
    for an image larger than ``tile``, and ``("batch", indices, x, hrs)`` with
    ``x`` stacked (and channels_last when asked), ready for G; ``hrs`` are the
    pairs' HR images (None for ``degrade``).
    """
    buckets: dict[tuple[int, int], list[tuple[int, torch.Tensor, torch.Tensor | None]]] = {}

    def flush(key: tuple[int, int]) -> tuple:
        group = buckets.pop(key)
        x = torch.stack([x for _, x, _ in group])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return "batch", [i for i, _, _ in group], x, [hr for _, _, hr in group]

    for i, x, mode, err, hr in items:
        if err is not None:
            yield "failed", i, err
            continue
        if mode:
            yield "mode", mode
        h, w = x.shape[-2:]
        if tile and (h > tile or w > tile):
            yield "tiled", [i], x.unsqueeze(0), [hr]
            continue
        bucket = buckets.setdefault((h, w), [])
        bucket.append((i, x, hr))
        if len(bucket) >= max(1, min(batch_size, BATCH_PIXEL_BUDGET // (h * w))):
            yield flush((h, w))
        elif sum(len(b) for b in buckets.values()) > 4 * batch_size:
            # Many distinct sizes: run the fullest partial batch rather than hoard images.
            yield flush(max(buckets, key=lambda k: len(buckets[k])))
    for key in list(buckets):
        yield flush(key)
