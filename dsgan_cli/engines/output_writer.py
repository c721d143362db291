"""The output side of the inference engine: G's outputs encoded and written atomically on a thread pool, with a
bounded backlog (PIL releases the GIL while encoding, so the writes overlap with the next batch's compute)."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..data.images import to_uint8
from ..plumbing.errors import DsganError
from ..plumbing.writes import save_image_atomic
from .jobs import Job

#: Lossy formats get a high quality: the point of the output is G's degradation,
#: not the encoder's.
LOSSY_QUALITY = 95


class Writer:
    """Encodes and atomically writes outputs on a thread pool, with bounded backlog."""

    def __init__(self, pil_format: str, threads: int, max_pending: int, on_done):
        self.pil_format = pil_format
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dsgan-encode")
        self.pending: deque[Future] = deque()
        self.max_pending = max(1, max_pending)
        self.on_done = on_done
        self.params = {"quality": LOSSY_QUALITY} if pil_format in ("JPEG", "WEBP") else {}
        self.encode_seconds = 0.0
        self._lock = threading.Lock()

    def _write(self, arr: torch.Tensor, job: Job, hr: torch.Tensor | None) -> tuple[Job, str | None]:
        """Encode one image (uint8 HWC, or float CHW in [0, 1]) and write it, after the pair's HR when given;
        returns the job and an error or None."""
        from PIL import Image

        t = time.perf_counter()
        dest = job.dest  # the file being written, named in an error (a pair's HR, then its LR)
        try:
            if hr is not None:
                dest = job.hr_dest
                save_image_atomic(Image.fromarray(hr.numpy(), "RGB"), dest, format=self.pil_format, **self.params)
                dest = job.dest
            if arr.dtype != torch.uint8:
                arr = to_uint8(arr)
            save_image_atomic(Image.fromarray(arr.numpy(), "RGB"), dest, format=self.pil_format, **self.params)
            err = None
        except OSError as e:
            err = f"cannot write {dest} ({e.strerror or e})"
        except DsganError as e:  # e.g. the output path is a symlink or FIFO (writes.refuse_special)
            err = str(e)
        except Exception as e:  # noqa: BLE001 - one bad output must not stop the run
            err = f"cannot encode {dest} ({e})"
        with self._lock:
            self.encode_seconds += time.perf_counter() - t
        return job, err

    def submit(self, arr, job: Job, hr: torch.Tensor | None = None) -> None:
        """Queue one output (and its pair's HR); blocks while the backlog is full."""
        while len(self.pending) >= self.max_pending:
            self._collect(self.pending.popleft())
        self.pending.append(self.pool.submit(self._write, arr, job, hr))

    def _collect(self, fut: Future) -> None:
        job, err = fut.result()
        self.on_done(job, err)

    def close(self) -> None:
        """Wait for every queued write."""
        while self.pending:
            self._collect(self.pending.popleft())
        self.pool.shutdown(wait=True)

    def cancel(self) -> None:
        """Drop the queued writes and wait for the ones under way (each completes or removes its temp file)."""
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def for_the_encoder(y: torch.Tensor) -> torch.Tensor:
    """G's output as the encoder threads take it. On a GPU, rounded there, moving a quarter of the bytes; on a
    CPU, left as it is for each encoder thread to round: small ops on the main thread pay for a full
    intra-op thread team (tens of ms on a busy machine)."""
    return to_uint8(y).cpu() if y.device.type != "cpu" else y
