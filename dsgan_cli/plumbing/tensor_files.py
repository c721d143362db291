"""State dicts read from files without running their code, and the checks on what such a read gives.

A weights file is read as safetensors, or with ``torch.load(weights_only=True)``; a zip checkpoint with compressed
entries (a zip bomb: torch.save never writes one) is refused before anything is unpacked, and loaded tensors that
stand for more bytes than the file holds (stride-0 or overlapping views) are refused before they are used. Shared by
the pretrained networks, the FID extractor and ``import``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import DsganError, file_error


def dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements each have their own place in its storage, with no gaps: strides of a contiguous
    layout in some order of the dimensions. A stride-0 (``expand``) or overlapping view fails: it stands for more
    elements than its storage holds."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def check_loaded_tensors(path: Path, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse, before any of them is copied or computed on, tensors that are not plain dense arrays, or that
    together stand for more bytes than the file ``path`` holds: a file of a few KB whose tensors are stride-0 views
    would otherwise expand to gigabytes in memory."""
    total = 0
    for name, t in tensors.items():
        if t.layout != torch.strided or t.is_meta or t.is_quantized or t.is_sparse:
            raise file_error(
                path, f"{what}[{name!r}] is a {t.layout} {'meta ' if t.is_meta else ''}tensor; only dense tensors with values are read"
            )
        if not dense(t):
            raise file_error(
                path,
                f"{what}[{name!r}] is not stored densely (strides {tuple(t.stride())} for shape "
                f"{tuple(t.shape)}: a stride-0 or overlapping view); only plain tensors are read",
            )
        total += t.numel() * t.element_size()
    try:
        size = path.stat().st_size
    except OSError as e:
        raise file_error(path, f"cannot read {what} ({e.strerror or e})") from None
    if total > size:
        raise file_error(
            path,
            f"{what} would take {total} bytes, more than the {size} bytes the file holds; "
            "refused (its tensors share or repeat their storage)",
        )


def check_zip_entries(path: Path) -> bool:
    """Whether ``path`` is a zip-format checkpoint; refuses one with compressed entries, which torch.save never
    writes and which would expand to far more memory than the file's size (a zip bomb)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False  # the legacy format: tensors stored as they are, no bigger than the file
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise file_error(path, f"not a PyTorch checkpoint (broken zip: {e})") from None
    if packed:
        raise file_error(
            path,
            f"refused: {len(packed)} compressed entries (first: {packed[0]}); torch.save writes none, "
            "and they could expand far beyond the file's size",
        )
    return True


def load_weights_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict without unpickling code: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, f"{what} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # Compressed zip entries are refused before anything is unpacked (a small file could expand to GBs).
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=check_zip_entries(path))
    except DsganError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not a weights file"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise file_error(path, f"cannot read {what} ({msg[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise file_error(path, f"not a state dict of tensors (expected {what})")
    check_loaded_tensors(path, state, what)
    return state
