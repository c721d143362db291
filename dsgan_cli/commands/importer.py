"""``import``: turn a generator checkpoint of the original DSGAN implementation into ``generator.safetensors``.

The original code (Fritsche et al., 2019) saves ``.tar`` files with
``torch.save({"epoch", "iteration", "model_g_state_dict", "models_d_state_dict",
"optimizer_*_state_dict", "scheduler_*_state_dict"})``; its released models
(DF2K gaussian, DF2K jpeg, DPED, AIM 2019) are 4x models. Such a file is a
pickle, so it is read only with ``torch.load(weights_only=True)``: tensors,
numbers, strings and containers, never code.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..engines.checkpoint import save_generator
from ..method.models import Generator, GeneratorConfig
from ..plumbing.errors import DsganError, file_error
from ..plumbing.reads import file_sha256
from ..plumbing.tensor_files import check_loaded_tensors, check_zip_entries

#: Key of the generator's state dict in the original checkpoints.
GENERATOR_KEY = "model_g_state_dict"
#: The original project trains and releases 4x models only.
ORIGINAL_SCALE = 4

# The original Generator keeps its residual blocks in a ModuleList and ours in a
# Sequential: both name them ``res_blocks.N.*``, so the parameter names map one
# to one. A ``module.`` prefix (DataParallel) is removed.
_KEY_MAP = [
    (re.compile(r"^block_input\.0\.(weight|bias)$"), r"block_input.0.\1"),
    (re.compile(r"^block_input\.1\.weight$"), r"block_input.1.weight"),
    (re.compile(r"^res_blocks\.(\d+)\.(conv1|conv2)\.(weight|bias)$"), r"res_blocks.\1.\2.\3"),
    (re.compile(r"^res_blocks\.(\d+)\.prelu\.weight$"), r"res_blocks.\1.prelu.weight"),
    (re.compile(r"^block_output\.(weight|bias)$"), r"block_output.\1"),
]


def our_key(original: str) -> str | None:
    """Our parameter name for a parameter name of the original Generator, or None if it has none."""
    name = original.removeprefix("module.")
    for pattern, repl in _KEY_MAP:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None


def read_original_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; one-line errors for anything else."""
    if not path.is_file():
        raise file_error(path, "checkpoint not found" if not path.exists() else "is not a file")
    try:
        with warnings.catch_warnings():
            # A sparse tensor is refused below with the file named; torch's notice about checking it is noise.
            warnings.filterwarnings("ignore", message="Validating sparse tensor", category=UserWarning)
            # A zip checkpoint is memory-mapped: the discriminator and optimiser tensors it also holds are never read.
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=check_zip_entries(path))
    except DsganError:
        raise
    except pickle.UnpicklingError as e:
        # weights_only refuses any global that is not a tensor type: the file wants code to run.
        found = re.search(r"GLOBAL (\S+)", str(e))
        culprit = f"it references {found.group(1)}" if found else "it holds objects other than tensors"
        raise file_error(path, f"refused: loading it would run code ({culprit}); only plain tensors and numbers are read") from None
    except Exception as e:  # noqa: BLE001 - zip/pickle decoding fails in many ways
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise file_error(path, f"not a PyTorch checkpoint ({detail[:200]})") from None
    if not isinstance(ckpt, dict) or GENERATOR_KEY not in ckpt:
        keys = ", ".join(sorted(map(str, ckpt))[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise file_error(path, f"not a checkpoint of the original DSGAN code: no {GENERATOR_KEY!r} (found: {keys})")
    return ckpt


#: Largest generator an import accepts (the original's is 8 blocks x 64 channels): a file declaring more is
#: refused before anything is allocated.
MAX_RES_BLOCKS, MAX_CHANNELS = 256, 1024


def expected_shapes(n_res_blocks: int, channels: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the paper's generator and its shape, computed without building the network."""
    c = channels
    shapes = {
        "block_input.0.weight": (c, 3, 3, 3),
        "block_input.0.bias": (c,),
        "block_input.1.weight": (1,),
        "block_output.weight": (3, c, 3, 3),
        "block_output.bias": (3,),
    }
    for i in range(n_res_blocks):
        for conv in ("conv1", "conv2"):
            shapes[f"res_blocks.{i}.{conv}.weight"] = (c, c, 3, 3)
            shapes[f"res_blocks.{i}.{conv}.bias"] = (c,)
        shapes[f"res_blocks.{i}.prelu.weight"] = (1,)
    return shapes


def convert_state(path: Path, original: Any) -> tuple[dict[str, torch.Tensor], int, int]:
    """Rename the original generator's tensors to ours and check them all (names, layout, shapes, values)
    before any is copied; returns (state, n_res_blocks, channels)."""
    if not isinstance(original, dict) or not all(isinstance(v, torch.Tensor) for v in original.values()):
        raise file_error(path, f"{GENERATOR_KEY} is not a state dict of tensors")
    renamed = {}
    for key, value in original.items():
        mine = our_key(str(key))
        if mine is None:
            raise file_error(path, f"{GENERATOR_KEY} has {key!r}, which the DSGAN generator does not have")
        renamed[mine] = (key, value)
    # Layout, density and the byte bound first: nothing below may allocate more than the file holds.
    check_loaded_tensors(path, {str(k): v for k, v in original.items()}, GENERATOR_KEY)
    first = renamed.get("block_input.0.weight", (None, None))[1]
    if first is None or first.ndim != 4:
        raise file_error(path, f"{GENERATOR_KEY} has no block_input.0.weight convolution")
    channels = int(first.shape[0])
    blocks = sorted({int(k.split(".")[1]) for k in renamed if k.startswith("res_blocks.")})
    if not 1 <= channels <= MAX_CHANNELS or len(blocks) > MAX_RES_BLOCKS or blocks != list(range(len(blocks))):
        raise file_error(
            path,
            f"{GENERATOR_KEY} declares {channels} channels and residual blocks {_span(blocks)}: "
            f"not a DSGAN generator (at most {MAX_CHANNELS} channels and {MAX_RES_BLOCKS} blocks, numbered from 0)",
        )
    expected = expected_shapes(len(blocks), channels)
    missing = sorted(set(expected) - set(renamed))
    if missing:
        raise file_error(path, f"{GENERATOR_KEY} lacks {missing[0]} ({len(missing)} tensors missing): not a DSGAN generator")
    for mine, (key, value) in renamed.items():
        if tuple(value.shape) != expected[mine]:
            raise file_error(path, f"{GENERATOR_KEY}[{key!r}] has shape {tuple(value.shape)}, the DSGAN generator needs {expected[mine]}")
    state = {}
    for mine, (key, value) in renamed.items():
        if not value.is_floating_point() or not torch.isfinite(value).all():
            raise file_error(path, f"{GENERATOR_KEY}[{key!r}] is not a finite float tensor")
        state[mine] = value.float().contiguous()
    return state, len(blocks), channels


def _span(blocks: list[int]) -> str:
    """Block numbers in short: '0-7', or the first few and the largest."""
    if not blocks:
        return "(none)"
    if blocks == list(range(len(blocks))):
        return f"0-{blocks[-1]}"
    return ", ".join(map(str, blocks[:3])) + f", ... {blocks[-1]}"


def build_generator(path: Path, state: dict[str, torch.Tensor], n_res_blocks: int, channels: int) -> Generator:
    """Our Generator holding ``state``; every name and shape must match the architecture."""
    generator = Generator(GeneratorConfig(n_res_blocks=n_res_blocks, channels=channels))
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise file_error(path, f"{GENERATOR_KEY} lacks {missing[0]} ({len(missing)} tensors missing): not a DSGAN generator")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise file_error(
                path, f"{GENERATOR_KEY}[{key!r}] has shape {tuple(value.shape)}, the DSGAN generator needs {tuple(expected[key].shape)}"
            )
    generator.load_state_dict(state, strict=True)
    return generator.eval()


def _int_or_empty(value: Any) -> str:
    """A counter from the checkpoint as text ('' when absent or not an integer)."""
    return str(int(value)) if isinstance(value, int) and not isinstance(value, bool) else ""


def import_original(src: str | Path, dest: str | Path | None = None, *, overwrite: bool = False) -> tuple[Path, dict[str, str]]:
    """Convert an original DSGAN ``.tar`` checkpoint to ``generator.safetensors``; returns (path, metadata)."""
    src = Path(src)
    dest = Path(dest) if dest is not None else src.with_suffix(".safetensors")
    if dest.exists() and not overwrite:
        raise file_error(dest, "already exists; pass --overwrite to replace it, or choose another -o")
    if dest.resolve() == src.resolve():
        raise file_error(dest, "is the input file; choose another -o")
    ckpt = read_original_checkpoint(src)
    state, n_res_blocks, channels = convert_state(src, ckpt[GENERATOR_KEY])
    generator = build_generator(src, state, n_res_blocks, channels)
    iteration = _int_or_empty(ckpt.get("iteration"))
    extra = {
        "source": src.name,
        "source_sha256": file_sha256(src),  # the imported model names exactly what it came from
        "source_format": "real-world-sr/dsgan",
        "epoch": _int_or_empty(ckpt.get("epoch")),
        "iteration": iteration,
    }
    save_generator(generator, dest, step=int(iteration or 0), scale=ORIGINAL_SCALE, extra=extra)
    return dest, {**extra, "scale": str(ORIGINAL_SCALE), "n_res_blocks": str(n_res_blocks), "channels": str(channels)}


__all__ = ["GENERATOR_KEY", "ORIGINAL_SCALE", "our_key", "import_original"]
