"""The demo's data: clean HR patches, and "real" LR patches cut from *other* photographs (all shipped with
scikit-image, nothing is fetched) through a documented degradation (sensor-like Gaussian noise, then JPEG), plus
held-out photos and their bicubic Xb. Built once into ``demo_output/data/`` and reused while its spec is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data import known
from ..plumbing import writes

DATA_VERSION = 2

# Source photographs (scikit-image ships these files; nothing is fetched). HR and real LR
# come from disjoint photos with a similar mix of content (a portrait or animal, objects, a
# grey-level scene, microscopy, a texture, a dark sky), so the discriminator can tell them
# apart only by the degradation, not by what they show.
HR_SOURCES = ("astronaut", "coffee", "camera", "immunohistochemistry", "brick", "rocket")
LR_SOURCES = ("chelsea", "stereo_motorcycle", "coins", "retina", "gravel", "hubble_deep_field")
#: Held-out HR patches come from the right-hand part of the real-LR photos, real LR patches
#: from the rest: never a training input, and the same kind of scenes as the real LR set, so
#: their spectra differ from it only by the degradation.
HOLDOUT_SPLIT = 0.7


@dataclass(frozen=True)
class DataSpec:
    """How the demo data is built; stored next to the data so a changed spec rebuilds it."""

    hr_size: int = 128
    scale: int = 2
    n_hr: int = 480
    n_lr: int = 480
    n_holdout: int = 32
    # Noise before compression, as in a camera. JPEG quality 60 or lower quantises most of this
    # noise away (Immerkaer estimate on these LR sets: 2.1 at q60, 5.4 at q80, 1.9 clean),
    # leaving too little for anyone to see or measure.
    noise_sigma: float = 12.0  # Gaussian sensor-like noise, 0-255 units, per pixel and channel
    jpeg_quality: int = 80
    source_short_side: tuple[int, ...] = (448, 320)  # photos are shrunk first so patches hold scenes, not blur
    seed: int = 0
    version: int = DATA_VERSION

    @property
    def lr_size(self) -> int:
        """Side of the LR images."""
        return self.hr_size // self.scale

    def degrade(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The demo's "real" degradation of a clean LR image: Gaussian noise, then JPEG (:func:`known.degrade`)."""
        return known.degrade(lr, rng, noise=self.noise_sigma, jpeg=self.jpeg_quality)


QUICK_SPEC = DataSpec(hr_size=32, n_hr=24, n_lr=24, n_holdout=6, source_short_side=(96,))


@dataclass(frozen=True)
class HeldOut:
    """The held-out photos after a run: the data folder, their bicubic Xb files, the folder of their Xd (G's
    outputs) and the spec the data was built with."""

    data_dir: Path
    xb_paths: list[Path]
    xd_dir: Path
    spec: DataSpec


def build_data(data_dir: Path, spec: DataSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or reuse, when the stored spec matches) the demo's HR, real-LR and held-out sets."""
    manifest_path = data_dir / "manifest.json"
    wanted = asdict(spec)
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("spec") == json.loads(json.dumps(wanted)) and _complete(data_dir, manifest):
            log(f"Reusing demo data in {data_dir}")
            return manifest
    for sub in ("hr", "lr_real", "holdout_hr", "holdout_xb"):
        if (data_dir / sub).exists():
            writes.remove_own(data_dir / sub)
    writes.remove_own(manifest_path)
    log(f"Building demo data in {data_dir} from scikit-image photographs ...")
    rng = np.random.default_rng(spec.seed)
    hr = known.patches(known.pyramid(HR_SOURCES, spec.source_short_side), spec.n_hr, spec.hr_size, rng, flip=True)
    lr_regions, holdout_regions = known.split_columns(known.pyramid(LR_SOURCES, spec.source_short_side), HOLDOUT_SPLIT)
    lr_clean = known.patches(lr_regions, spec.n_lr, spec.hr_size, rng, flip=True)
    lr_real = [spec.degrade(known.xb_of(p, spec.scale), rng) for p in lr_clean]
    holdout = known.patches(holdout_regions, spec.n_holdout, spec.hr_size, rng, flip=True)
    known.save_pngs(data_dir / "hr", hr, "hr")
    known.save_pngs(data_dir / "lr_real", lr_real, "lr")
    known.save_pngs(data_dir / "holdout_hr", holdout, "holdout")
    manifest = {
        "spec": wanted,
        "sources": {"hr": list(HR_SOURCES), "lr_real": list(LR_SOURCES), "holdout_hr": list(LR_SOURCES)},
        "holdout_note": (
            f"held-out HR patches are cut from the right {1 - HOLDOUT_SPLIT:.0%} of the real-LR photos, "
            f"real LR patches from the left {HOLDOUT_SPLIT:.0%}; no held-out image is a training input"
        ),
        "counts": {"hr": len(hr), "lr_real": len(lr_real), "holdout_hr": len(holdout)},
        "degradation": (
            f"real LR = antialiased bicubic x{spec.scale} downscale of {spec.hr_size}px crops, "
            f"+ Gaussian noise sigma {spec.noise_sigma:g}/255 per pixel and channel, then JPEG quality {spec.jpeg_quality}"
        ),
    }
    from ..plumbing.writes import write_bytes_atomic

    text = json.dumps(manifest, indent=2)
    write_bytes_atomic(manifest_path, text.encode())
    return json.loads(text)


def _complete(data_dir: Path, manifest: dict[str, Any]) -> bool:
    """True when every set holds the number of images the manifest promises."""
    counts = manifest.get("counts", {})
    return bool(counts) and all(
        (data_dir / name).is_dir() and len(list((data_dir / name).glob("*.png"))) == n for name, n in counts.items()
    )


def write_bicubic_set(hr_dir: Path, out_dir: Path, scale: int) -> list[Path]:
    """Xb for every held-out HR image, made with the package's downscale (what ``degrade`` feeds G)."""
    from ..data.images import list_images, load_rgb
    from ..plumbing.writes import save_image_atomic

    paths = []
    for src in list_images(hr_dir):
        dest = out_dir / (src.stem + ".png")
        if not dest.is_file():
            img, _ = load_rgb(src)
            save_image_atomic(Image.fromarray(known.xb_of(np.asarray(img), scale)), dest)
        paths.append(dest)
    return paths


def holdout_targets(xb_paths: list[Path], spec: DataSpec) -> list[np.ndarray]:
    """The known answer for each held-out Xb: the demo's real degradation applied to it (seeded)."""
    rng = np.random.default_rng(spec.seed + 1)
    return [spec.degrade(xb, rng) for xb in load_arrays(xb_paths)]


def load_arrays(paths: list[Path]) -> list[np.ndarray]:
    """uint8 RGB arrays of image files, through the package's reader."""
    from ..data.images import load_rgb

    return [np.asarray(load_rgb(p)[0]) for p in paths]
