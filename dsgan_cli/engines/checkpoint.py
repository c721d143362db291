"""The exported generator file (``generator.safetensors``): writing, inspecting, loading.

This file is what ``degrade`` consumes. It holds only tensors plus string
metadata (recipe, step, scale, package version); nothing in it is ever
unpickled or executed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save

from .. import __version__
from ..method.models import Generator, GeneratorConfig, RetiredOptionError, check_retired
from ..plumbing.errors import DsganError, file_error
from ..plumbing.reads import open_regular
from ..plumbing.writes import write_bytes_atomic

GENERATOR_FORMAT = "dsgan-generator/1"

#: Where ``train idphoto`` exports its generator; ``degrade`` looks here first.
DEFAULT_GENERATOR = Path("runs") / "idphoto" / "generator.safetensors"


def generator_state_for_export(generator: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous (NCHW) copies of the generator's tensors, safe to serialise."""
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items()}


def save_generator(
    generator: torch.nn.Module,
    path: str | Path,
    *,
    step: int,
    scale: int,
    recipe: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``generator`` to ``path`` as safetensors with DSGAN metadata, atomically."""
    metadata = {
        **(extra or {}),
        "format": GENERATOR_FORMAT,
        "dsgan_version": __version__,
        "step": str(int(step)),
        "scale": str(int(scale)),
        **{k: str(v) for k, v in generator.arch().items()},
        "generator_config": generator.config.to_json(),
        "recipe": json.dumps(recipe or {}, sort_keys=True),
    }
    write_bytes_atomic(path, safetensors_save(generator_state_for_export(generator), metadata=metadata))


#: Largest safetensors header read for its metadata alone (a real one is a few KB).
MAX_HEADER = 16 * 2**20


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file, read from its header only (no tensor is loaded)."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(MAX_HEADER, os.fstat(f.fileno()).st_size - 8):
                raise file_error(path, "not a safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except OSError as e:
        raise file_error(path, f"cannot read ({e.strerror or e})") from None
    except ValueError as e:
        raise file_error(path, f"not a safetensors file ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def read_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise file_error(path, "checkpoint not found")
    if path.is_dir():
        candidate = path / "generator.safetensors"
        if candidate.is_file():
            path = candidate
        else:
            raise file_error(path, "is a folder without generator.safetensors")
    try:
        with open_regular(path) as f:
            data = f.read()
    except OSError as e:
        raise file_error(path, f"cannot read checkpoint ({e.strerror or e})") from None
    try:
        from safetensors.torch import load as safetensors_load

        tensors = safetensors_load(data)
        n = int.from_bytes(data[:8], "little")
        metadata = dict(json.loads(data[8 : 8 + n]).get("__metadata__") or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise file_error(path, f"not a valid safetensors checkpoint (truncated, or another format such as a pickle): {detail}") from None
    metadata["sha256"] = hashlib.sha256(data).hexdigest()
    return tensors, metadata


def load_generator(path: str | Path) -> tuple[Generator, dict[str, Any]]:
    """Build a :class:`Generator` from a ``generator.safetensors`` file.

    Returns the model (eval mode, on CPU) and its metadata with ``step`` and
    ``scale`` as ints and ``recipe`` as a dict.
    """
    tensors, raw = read_generator_file(path)
    meta: dict[str, Any] = dict(raw)
    try:
        config = generator_config(raw, tensors)
    except RetiredOptionError as e:
        raise file_error(path, f"its generator uses {e}") from None
    except GeneratorConfigError as e:
        raise file_error(path, f"not a DSGAN generator checkpoint ({e})") from None
    try:
        meta["step"] = int(raw.get("step", 0))
        meta["scale"] = int(raw["scale"]) if "scale" in raw else None
        meta["recipe"] = json.loads(raw.get("recipe", "{}"))
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise file_error(path, f"not a DSGAN generator checkpoint (bad or missing {e})") from None
    _check_metadata(path, meta, config.n_res_blocks, config.channels, tensors)
    generator = Generator(config)
    try:
        generator.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise file_error(path, f"wrong architecture for a DSGAN generator ({first})") from None
    return generator.eval(), meta


def generator_config(raw: dict[str, str], tensors: dict[str, torch.Tensor]) -> GeneratorConfig:
    """The :class:`GeneratorConfig` a file's metadata holds: its ``generator_config`` JSON, else (files written
    before it existed) the separate keys, else the paper's network with the tensors' sizes."""
    if "generator_config" in raw:
        try:
            fields = json.loads(raw["generator_config"])
        except json.JSONDecodeError as e:
            raise GeneratorConfigError(f"generator_config is not JSON: {e}") from None
        if not isinstance(fields, dict):
            raise GeneratorConfigError("generator_config is not a JSON object")
        try:
            return GeneratorConfig.from_dict(fields)
        except RetiredOptionError:
            raise
        except (ValueError, TypeError) as e:
            raise GeneratorConfigError(str(e)) from None
    try:
        fields = dict(
            n_res_blocks=int(raw.get("n_res_blocks") or _count_res_blocks(tensors)),
            channels=int(raw.get("channels") or tensors["block_input.0.weight"].shape[0]),
            padding=raw.get("padding", "zeros"),
            noise_channels=int(raw.get("noise_channels", 0)),
            output=raw.get("output", "sigmoid"),
            output_noise=_flag(raw.get("output_noise", "False"), "output_noise"),
            blur_size=int(raw.get("blur_size", 5)),
            noise_filter=int(raw.get("noise_filter", 1)),
            grid_period=int(raw.get("grid_period", 0)),
            jpeg_quality=int(raw.get("jpeg_quality", 0)),
        )
    except (KeyError, ValueError) as e:
        raise GeneratorConfigError(f"bad or missing {e}") from None
    try:
        return GeneratorConfig(**check_retired(fields))
    except RetiredOptionError:
        raise
    except ValueError as e:
        raise GeneratorConfigError(str(e)) from None


class GeneratorConfigError(ValueError):
    """A generator file's configuration that cannot be read or is out of range (the reason as its text)."""


def _flag(text: str, name: str) -> bool:
    """A boolean stored as text in safetensors metadata ("True"/"False")."""
    if text not in ("True", "False"):
        raise ValueError(f"{name}={text!r}")
    return text == "True"


#: Largest downscale factor a checkpoint may declare (DSGAN uses 2 or 4).
MAX_SCALE = 16


def _check_metadata(path: Path, meta: dict[str, Any], n_res_blocks: int, channels: int, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse metadata out of range or at odds with the tensors, and non-finite weights, before building the network.

    The architecture numbers must match the tensors in the file, so the
    network built from them is never larger than the file itself.
    """
    scale = meta.get("scale")
    if scale is not None and not 1 <= scale <= MAX_SCALE:
        raise file_error(path, f"checkpoint metadata scale={scale} is out of range (1 to {MAX_SCALE})")
    first = tensors.get("block_input.0.weight")
    if first is None or first.ndim != 4:
        raise file_error(path, "not a DSGAN generator checkpoint (no block_input.0.weight tensor)")
    if channels != first.shape[0]:
        raise file_error(path, f"checkpoint metadata channels={channels} does not match the weights ({first.shape[0]})")
    if first.shape[1] != 3:
        raise file_error(path, f"the generator's first convolution takes {first.shape[1]} channels, not the 3 colours")
    try:
        blocks = _count_res_blocks(tensors)
    except KeyError:
        blocks = 0
    if n_res_blocks != blocks:
        raise file_error(path, f"checkpoint metadata n_res_blocks={n_res_blocks} does not match the weights ({blocks})")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise file_error(path, f"weights are not finite (NaN or infinity in {name})")


def default_generator(root: str | Path = ".") -> Path:
    """The generator ``degrade`` uses without ``--checkpoint``: runs/idphoto's, else the only runs/*/ one."""
    root = Path(root)
    if (root / DEFAULT_GENERATOR).is_file():
        return root / DEFAULT_GENERATOR
    found = sorted(root.glob("runs/*/generator.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    if len(found) == 1:
        return found[0]
    where = root.resolve()
    if not found:
        raise DsganError(
            f"no --checkpoint given and neither {DEFAULT_GENERATOR} nor runs/*/generator.safetensors "
            f"exists under {where}; train first (dsgan train idphoto) or pass --checkpoint PATH"
        )
    # Several runs: picking one silently could degrade a whole data set with the wrong model.
    names = ", ".join(str(p) for p in found)
    raise DsganError(
        f"no --checkpoint given and {len(found)} trained generators found (newest first: {names}); choose one with --checkpoint PATH"
    )


def _count_res_blocks(tensors: dict[str, torch.Tensor]) -> int:
    """Infer the number of residual blocks from tensor names."""
    ids = {int(k.split(".")[1]) for k in tensors if k.startswith("res_blocks.")}
    if not ids:
        raise KeyError("res_blocks")
    return max(ids) + 1


__all__ = [
    "GENERATOR_FORMAT",
    "DEFAULT_GENERATOR",
    "default_generator",
    "save_generator",
    "load_generator",
    "read_generator_file",
    "generator_state_for_export",
]
