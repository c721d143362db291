"""The typed training recipe: dataclasses loaded from TOML, with ``--set`` overrides.

Every key is declared here with its type and allowed range, so a typo or a
wrong value is reported with the key and the file instead of being ignored.
Relative paths in a recipe are taken relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plumbing.errors import DsganError

#: Smallest image side AlexNet's stride-4 convolution and two 3x3/2 poolings accept.
LPIPS_MIN_SIDE = 31


def _spec(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
) -> Any:
    """A dataclass field carrying its help text and allowed range as metadata."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "min_exclusive": min_exclusive, "max_exclusive": max_exclusive}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    hr_dir: str = _spec("data/hr", "folder of aligned HR faces (hr_size x hr_size)")
    lr_dir: str = _spec("data/lr", "folder of real low-quality faces (lr_size x lr_size), unpaired with hr_dir")
    hr_size: int = _spec(256, "HR image side in pixels", min=8)
    lr_size: int = _spec(128, "LR image side in pixels", min=4)
    scale: int = _spec(2, "downscale factor from HR to LR (bicubic, antialiased)", min=1, max=16)
    crop_size: int = _spec(0, "random LR-size crop side for training; 0 = whole image", min=0)
    flip: bool = _spec(
        False,
        "random horizontal flips of the HR images (real LR are never flipped: a mirrored "
        "photo carries a mirrored degradation, e.g. a motion blur's direction)",
    )
    resize_mismatched: bool = _spec(False, "resize images of the wrong size instead of stopping")
    num_workers: int = _spec(4, "DataLoader worker processes", min=0)
    cache_dir: str = _spec(
        "",
        "decoded-image cache shared by all processes and later runs; "
        "'' = ~/.cache/dsgan-cli/data, 'none' = decode into each process's RAM at every start",
    )


@dataclass
class ModelConfig:
    n_res_blocks: int = _spec(8, "residual blocks in the generator", min=1)
    channels: int = _spec(64, "feature channels in the generator", min=4)
    filter: str = _spec("avg", "low-pass filter for the frequency separation", choices=("avg", "gaussian"))
    filter_kernel: int = _spec(5, "low-pass kernel size (odd)", min=1)
    padding: str = _spec(
        "zeros", "generator convolution padding; 'reflect' avoids border stripes", choices=("zeros", "reflect", "replicate")
    )
    output: str = _spec(
        "sigmoid", "generator output: 'sigmoid' (the paper's) or 'residual' (Xb + learned residual)", choices=("sigmoid", "residual")
    )
    noise_init: float = _spec(
        1.7, "starting standard deviation of the output noise, in levels of 255 (model.output_noise)", min=0.01, max=255
    )
    d_norm: str = _spec(
        "batch",
        "normalisation in the discriminator: 'batch' (the paper's; divides out the grain's strength) or 'none'",
        choices=("batch", "none"),
    )
    output_noise: bool = _spec(
        False,
        "add N(0,1) noise at the output, scaled per pixel and colour channel by a learned "
        "standard deviation (independent per channel, like sensor noise)",
    )
    grain_check: bool = _spec(
        False,
        "read off the real LR before training whether they carry grain: where their flattest patches hold no more "
        "fine detail than the clean Xb's, G is built without output noise and the noise-level term is off "
        "(needs model.output_noise)",
    )
    jpeg_quality: int = _spec(
        0,
        "G's output goes through JPEG (4:2:0, 8x8 blocks on the image's grid, the standard tables) "
        "at this quality, 1-100; -1 = the quality the real LR were saved at, read off their "
        "DCT coefficients (off when they show none); 0 = off",
        min=-1,
        max=100,
    )
    grid_quality: int = _spec(
        0,
        "where model.jpeg_quality = -1 reads no quality but the real LR show a block codec's grid (block edges every 4 "
        "or 8 px from the corner: WebP's, or a JPEG's whose coefficients a later step moved), G ends in JPEG at this "
        "quality, 1-100, standing in for that codec; 0 = off (a given model.jpeg_quality is used as it is)",
        min=0,
        max=100,
    )
    noise_mix: bool = _spec(
        False,
        "mix the output noise's colour channels with their mean by one learned share: grain from independent per "
        "channel to grey (needs model.output_noise)",
    )
    noise_kernel: int = _spec(
        0,
        "side of one learned kernel the output noise is filtered by (odd, >= 3; unit energy): grain correlated over "
        "neighbouring pixels (needs model.output_noise); 0 = off, white grain",
        min=0,
        max=31,
    )
    blur_kernel: int = _spec(
        0,
        "side of one learned blur G applies first (odd, >= 3; non-negative, normalised, point symmetric); "
        "the content losses compare with the blurred input, so only the GAN sets the blur; 0 = off",
        min=0,
        max=31,
    )
    blur_source: str = _spec(
        "gan",
        "what sets the blur G applies first (model.blur_kernel): 'gan' (the GAN alone, from a sharp start) or "
        "'read' (a Gaussian read off the real LR's power spectra against the clean Xb's before training, then fixed)",
        choices=("gan", "read"),
    )


@dataclass
class LossConfig:
    w_color: float = _spec(1.0, "weight of the colour (low-frequency L1) loss", min=0)
    w_gan: float = _spec(0.005, "weight of the adversarial (texture) loss", min=0)
    w_perceptual: float = _spec(0.01, "weight of the VGG perceptual loss", min=0)
    w_added_detail: float = _spec(
        0.0,
        "weight of the added-detail loss: local high-pass energy G adds beyond Xb's, without its output noise (0 = off, the paper's)",
        min=0,
    )
    w_noise_level: float = _spec(
        0.0,
        "weight of matching Xd's noise level (a robust estimate from the finest diagonal detail) to the real LR's (0 = off, the paper's)",
        min=0,
    )
    content_without_noise: bool = _spec(
        False,
        "colour and perceptual losses compare Xb with Xd before its output noise "
        "(model.output_noise): the noise level is set by the GAN alone",
    )


@dataclass
class PerceptualConfig:
    net: str = _spec(
        "vgg19",
        "perceptual network: VGG19 features, or LPIPS v0.1 with AlexNet (the original implementation's)",
        choices=("vgg19", "lpips-alex"),
    )
    weights: str = _spec(
        "torchvision", "backbone weights: 'torchvision' (pretrained, downloaded once), a local file path, or 'random' (tests only)"
    )
    layers: list[str] = _spec(["relu1_2", "relu2_2", "relu3_4", "relu4_4"], "VGG19 layers compared (net = 'vgg19' only)")


@dataclass
class OptimConfig:
    lr: float = _spec(2e-4, "Adam learning rate for G and D", min=0, min_exclusive=True)
    beta1: float = _spec(0.5, "Adam beta1", min=0, max=1, max_exclusive=True)
    beta2: float = _spec(0.999, "Adam beta2", min=0, max=1, max_exclusive=True)
    structure_lr: float = _spec(
        0.01,
        "Adam learning rate of G's global structure: the logits of its learned kernels (model.blur_kernel, "
        "model.noise_kernel) and of the grain's grey share (model.noise_mix), on the same schedule as lr",
        min=0,
        min_exclusive=True,
    )
    lr_decay: str = _spec("none", "learning-rate schedule", choices=("none", "linear"))
    decay_start: int = _spec(0, "iteration where linear decay to 0 begins", min=0)
    ema: float = _spec(
        0.0,
        "decay of an exponential moving average of G's weights, which becomes the exported generator "
        "(e.g. 0.99: about the last 100 steps); 0 = off, the last G as is",
        min=0,
        max=1,
        max_exclusive=True,
    )


@dataclass
class TrainConfig:
    iterations: int = _spec(80_000, "optimisation steps", min=1)
    batch_size: int = _spec(16, "images per step per process", min=1)
    grad_accum: int = _spec(1, "gradient accumulation steps", min=1)
    precision: str = _spec(
        "no",
        "mixed precision; 'auto': bf16 where the hardware runs it fast (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX), else 'no'",
        choices=("no", "bf16", "fp16", "auto"),
    )
    memory_format: str = _spec(
        "auto",
        "tensor layout of G, D and the perceptual network; 'auto' = the fastest measured per network and device (BENCHMARKS.md)",
        choices=("auto", "contiguous", "channels_last"),
    )
    compile: bool = _spec(False, "torch.compile G, D and the perceptual network (first steps are slower while compiling)")
    seed: int = _spec(0, "random seed", min=0, max=2**32 - 1)
    output_dir: str = _spec("runs/idphoto", "folder for checkpoints, samples and logs")
    checkpoint_every: int = _spec(5000, "steps between checkpoints", min=1)
    keep_last: int = _spec(3, "checkpoints kept", min=1)
    sample_every: int = _spec(1000, "steps between sample grids", min=1)
    log_every: int = _spec(100, "steps between log records", min=1)


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, suitable for TOML/JSON."""
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    """Human name of a field type."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"list of {_type_name(item)}"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against field type ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise DsganError(f"{where}: expected a {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return [_coerce(v, item, where) for v in value]
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):
            raise DsganError(f"{where}: must be a finite number, got {value!r}")
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise DsganError(f"{where}: expected a {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _check_range(value: Any, f: dataclasses.Field, where: str) -> None:
    """Raise when ``value`` is outside the field's declared range or choices."""
    m = f.metadata
    if m.get("choices") is not None and value not in m["choices"]:
        raise DsganError(f"{where}: must be one of {', '.join(map(repr, m['choices']))}, got {value!r}")
    lo, hi = m.get("min"), m.get("max")
    if lo is not None:
        if m.get("min_exclusive") and not value > lo:
            raise DsganError(f"{where}: must be > {lo}, got {value!r}")
        if not value >= lo:
            raise DsganError(f"{where}: must be >= {lo}, got {value!r}")
    if hi is not None:
        if m.get("max_exclusive") and not value < hi:
            raise DsganError(f"{where}: must be < {hi}, got {value!r}")
        if not value <= hi:
            raise DsganError(f"{where}: must be <= {hi}, got {value!r}")


#: Recipe keys earlier versions had, each measured not to help (BENCHMARKS.md keeps their rows).
RETIRED_KEYS = (
    "model.noise_channels",
    "model.noise_filter",
    "model.blur_size",
    "model.grid_period",
    "model.d_contrast_free",
    "loss.noise_level_scales",
)


def _section_types() -> dict[str, type]:
    """Section name -> dataclass type."""
    hints = typing.get_type_hints(Recipe)
    return {f.name: hints[f.name] for f in dataclasses.fields(Recipe)}


def _build(data: dict[str, Any], source: str) -> Recipe:
    """Build a validated :class:`Recipe` from nested dict ``data``."""
    sections = _section_types()
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise DsganError(f"{source}: unknown section or key {unknown[0]!r} (known sections: {', '.join(sections)})")
    built = {}
    for name, cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise DsganError(f"{source}: {name} must be a table [{name}], got {type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key in raw:
            if f"{name}.{key}" in RETIRED_KEYS:
                raise DsganError(
                    f"{source}: {name}.{key} is a retired option (dsgan-cli 0.1; measured not to help, "
                    f"BENCHMARKS.md): remove it from the recipe"
                )
            if key not in fields:
                raise DsganError(f"{source}: unknown key {name}.{key} (known: {', '.join(fields)})")
        kwargs = {}
        for key, value in raw.items():
            where = f"{source}: {name}.{key}"
            value = _coerce(value, hints[key], where)
            _check_range(value, fields[key], where)
            kwargs[key] = value
        built[name] = cls(**kwargs)
    recipe = Recipe(**built)
    _check_consistency(recipe, source)
    return recipe


def _check_consistency(r: Recipe, source: str) -> None:
    """Cross-field rules that single-key ranges cannot express."""
    if r.data.hr_size != r.data.lr_size * r.data.scale:
        raise DsganError(
            f"{source}: data.hr_size ({r.data.hr_size}) must equal data.lr_size ({r.data.lr_size}) x data.scale ({r.data.scale})"
        )
    if r.data.crop_size > r.data.lr_size:
        raise DsganError(f"{source}: data.crop_size ({r.data.crop_size}) must be <= data.lr_size ({r.data.lr_size})")
    if r.model.filter_kernel % 2 == 0:
        raise DsganError(f"{source}: model.filter_kernel must be odd, got {r.model.filter_kernel}")
    if r.model.grain_check and not r.model.output_noise:
        raise DsganError(f"{source}: model.grain_check needs model.output_noise = true")
    if r.model.blur_source == "read" and not r.model.blur_kernel:
        raise DsganError(f"{source}: model.blur_source = 'read' needs model.blur_kernel")
    if r.model.noise_mix and not r.model.output_noise:
        raise DsganError(f"{source}: model.noise_mix needs model.output_noise = true")
    if r.model.noise_kernel and not r.model.output_noise:
        raise DsganError(f"{source}: model.noise_kernel needs model.output_noise = true")
    if r.model.noise_kernel and (r.model.noise_kernel < 3 or r.model.noise_kernel % 2 == 0):
        raise DsganError(f"{source}: model.noise_kernel must be 0 (off) or an odd number >= 3, got {r.model.noise_kernel}")
    if r.model.blur_kernel and (r.model.blur_kernel < 3 or r.model.blur_kernel % 2 == 0):
        raise DsganError(f"{source}: model.blur_kernel must be 0 (off) or an odd number >= 3, got {r.model.blur_kernel}")
    side = r.data.crop_size or r.data.lr_size
    if r.model.filter_kernel > side:
        # The colour loss filters without padding: a kernel wider than the training images leaves nothing.
        raise DsganError(
            f"{source}: model.filter_kernel ({r.model.filter_kernel}) must be <= the LR training side "
            f"({side}: data.crop_size, or data.lr_size when crop_size = 0)"
        )
    for key, value in (("data.hr_dir", r.data.hr_dir), ("data.lr_dir", r.data.lr_dir), ("train.output_dir", r.train.output_dir)):
        if not value.strip():
            raise DsganError(f"{source}: {key} must not be empty")
    from .losses import VGG19_LAYERS  # local: losses imports torchvision, keep recipe light

    for layer in r.perceptual.layers:
        if layer not in VGG19_LAYERS:
            raise DsganError(f"{source}: perceptual.layers: unknown VGG19 layer {layer!r} (known: {', '.join(VGG19_LAYERS)})")
    if not r.perceptual.layers:
        raise DsganError(f"{source}: perceptual.layers must name at least one layer")
    side = r.data.crop_size or r.data.lr_size
    if r.perceptual.net == "lpips-alex" and r.loss.w_perceptual > 0 and side < LPIPS_MIN_SIDE:
        raise DsganError(
            f"{source}: perceptual.net = 'lpips-alex' needs training images of at least {LPIPS_MIN_SIDE} "
            f"pixels (AlexNet's strides), got {side}; use 'vgg19' or larger data.crop_size / data.lr_size"
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise DsganError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise DsganError(f"--set {text!r}: key must look like section.key (e.g. train.iterations)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested dict ``data`` with ``--set`` overrides applied."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise DsganError(f"--set {text!r}: {section} is not a section")
        table[key] = value
    return out


def resolve_recipe(name_or_path: str | Path) -> Path:
    """The recipe file meant by a path to a .toml file or a built-in name (``idphoto``, ``paper``).

    ``recipes/NAME.toml`` that does not exist here (the project's own layout, typed in another folder) is the
    built-in NAME, with a one-line note.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = importlib.resources.files("dsgan_cli.recipes")
    names = sorted(p.name.removesuffix(".toml") for p in builtin.iterdir() if p.name.endswith(".toml"))
    if str(name_or_path) in names:
        return Path(str(builtin.joinpath(f"{name_or_path}.toml")))
    if path.parent.name == "recipes" and path.suffix == ".toml" and path.stem in names and not path.exists():
        import sys

        resolved = Path(str(builtin.joinpath(path.name)))
        print(f"note: {path} is not in this folder; using the built-in recipe {path.stem} ({resolved})", file=sys.stderr)
        return resolved
    if path.exists():
        return path  # a folder: load_recipe says so
    raise DsganError(f"{name_or_path}: recipe file not found, and not a built-in recipe ({', '.join(names)})")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe TOML file (or a built-in recipe by name), then apply ``--set`` overrides."""
    path = resolve_recipe(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DsganError(f"{path}: recipe file not found") from None
    except IsADirectoryError:
        raise DsganError(f"{path}: is a folder, expected a recipe .toml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DsganError(f"{path}: cannot read recipe ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DsganError(f"{path}: TOML syntax error: {e}") from None
    source = str(path)
    if overrides:
        source += " (with --set)"
        data = apply_overrides(data, list(overrides))
    return _build(data, source)


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate a nested dict (e.g. a checkpoint's stored recipe) as a :class:`Recipe`."""
    return _build(data, source)


def recipe_help() -> list[tuple[str, str, str]]:
    """(key, default, help) rows for every recipe key, for documentation."""
    rows = []
    for name, cls in _section_types().items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            rows.append((f"{name}.{f.name}", repr(default), f.metadata.get("help", "")))
    return rows
