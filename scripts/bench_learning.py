#!/usr/bin/env python3
"""Does training learn a KNOWN degradation? Paired metrics on held-out photos that artefacts can't fake.

For each case, "real" LR = the case's degradation applied to the antialiased bicubic x2 downscale
of clean photo patches. The generator is trained (the real ``dsgan train`` CLI, in a subprocess)
on unpaired clean HR patches from other photos and those real LR patches, then run on held-out
photos (a third, disjoint set) whose target is known: the same Xb through the same degradation.
Every figure compares Xd with that target, pixel-aligned, with :mod:`dsgan_cli.metrics.paired` (numpy/scipy,
no filter shared with training): grain in flat regions, colour shift, border ratio, sharpness,
JPEG blockiness, residual spectrum distance.

Usage:
    .venv/bin/python scripts/bench_learning.py [--recipe idphoto|paper|FILE.toml] [--set KEY=VALUE ...]
        [--cases noise,jpeg,blur_noise,demo] [--budget-min 10] [--out bench_learning_out]

Writes OUT/results.json, OUT/table.md and OUT/CASE/grid.png; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsgan_cli.data import known  # noqa: E402
from dsgan_cli.metrics.paired import TARGETS, paired_report, verdict  # noqa: E402
from dsgan_cli.plumbing.jsonl import read_jsonl  # noqa: E402

# Three disjoint groups of scikit-image's bundled photographs (nothing is downloaded).
HR_PHOTOS = ("astronaut", "coffee", "camera", "brick", "immunohistochemistry")
REAL_PHOTOS = ("chelsea", "retina", "gravel", "hubble_deep_field", "coins")
HELDOUT_PHOTOS = ("rocket", "stereo_motorcycle", "clock", "moon")
#: Short sides the photos are shrunk to (each photo at each side) before training and held-out patches are cut.
TRAIN_SIDES = (320, 224)
HELDOUT_SIDES = (384, 256)


@dataclass(frozen=True)
class Case:
    """A known degradation applied to clean LR images (0-255 float units)."""

    name: str
    noise: float = 0.0  # Gaussian sigma, 0-255 units, per pixel and channel
    blur: float = 0.0  # Gaussian blur sigma in LR pixels, before the noise
    jpeg: int = 0  # JPEG quality after the noise (0 = none)
    grain: bool = False  # the grain target applies
    sharpness: bool = False  # the blur target applies

    def degrade(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The case's degradation of a clean uint8 LR image: blur, noise, then JPEG (:func:`known.degrade`)."""
        return known.degrade(lr, rng, blur=self.blur, noise=self.noise, jpeg=self.jpeg)

    def describe(self) -> str:
        parts = [f"blur sigma {self.blur:g}"] * bool(self.blur) + [f"noise sigma {self.noise:g}/255"] * bool(self.noise)
        parts += [f"JPEG q{self.jpeg}"] * bool(self.jpeg)
        return " + ".join(parts)


CASES = {
    "noise": Case("noise", noise=8.0, grain=True),
    "jpeg": Case("jpeg", jpeg=30),
    "blur_noise": Case("blur_noise", blur=1.0, noise=5.0, grain=True, sharpness=True),
    "demo": Case("demo", noise=12.0, jpeg=80, grain=True),
}


# ----------------------------------------------------------------------------- data


def build_case_data(root: Path, case: Case, n_train: int, n_heldout: int, hr_size: int, seed: int) -> dict:
    """HR and real-LR training folders plus held-out (Xb, target) arrays for one case."""
    rng = np.random.default_rng(seed)
    hr = known.patches(known.pyramid(HR_PHOTOS, TRAIN_SIDES), n_train, hr_size, rng, flip=False)
    real_clean = known.patches(known.pyramid(REAL_PHOTOS, TRAIN_SIDES), n_train, hr_size, rng, flip=False)
    real = [case.degrade(known.xb_of(p, 2), rng) for p in real_clean]
    held_hr = known.patches(known.pyramid(HELDOUT_PHOTOS, HELDOUT_SIDES), n_heldout, 2 * 64, rng, flip=False)
    held_xb = [known.xb_of(p, 2) for p in held_hr]
    held_target = [case.degrade(x, rng) for x in held_xb]
    known.save_pngs(root / "hr", hr, "hr")
    known.save_pngs(root / "lr_real", real, "lr")
    return {"xb": held_xb, "target": held_target}


# ----------------------------------------------------------------------------- training and running G


def train_case(data: Path, out: Path, recipe: str, sets: list[str], budget_min: float, hr_size: int) -> dict:
    """Train with the real CLI on this case's data; returns steps and seconds."""
    cmd = [
        sys.executable,
        "-m",
        "dsgan_cli",
        "train",
        recipe,
        "--no-progress",
        "--max-minutes",
        str(budget_min),
        "--set",
        f"data.hr_dir={data / 'hr'}",
        "--set",
        f"data.lr_dir={data / 'lr_real'}",
        "--set",
        f"data.hr_size={hr_size}",
        "--set",
        f"data.lr_size={hr_size // 2}",
        "--set",
        "data.scale=2",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "data.num_workers=0",
    ]
    if not any(s.startswith("perceptual.weights=") for s in sets) and not vgg19_cached():
        # Said in the output and the JSON: pretrained VGG19 is not on this machine.
        sets = [*sets, "perceptual.weights=random"]
        print("note: pretrained VGG19 not cached: the perceptual term uses random weights", file=sys.stderr)
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "DSGAN_OFFLINE": os.environ.get("DSGAN_OFFLINE", "1")}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"training failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    records = read_jsonl(out / "logs" / "metrics.jsonl")
    return {"steps": records[-1]["step"], "seconds": round(seconds, 1), "sets": sets}


def vgg19_cached() -> bool:
    """Whether the pretrained VGG19 file is in the torch hub cache."""
    from dsgan_cli.method.weights import VGG19, hub_cache_file

    return hub_cache_file(VGG19).is_file()


def run_generator(gen_path: Path, xbs: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Xd = G(Xb) with the exported generator, noise seeded per image like ``degrade``."""
    import torch

    from dsgan_cli.engines.checkpoint import load_generator

    g, _ = load_generator(gen_path)
    out = []
    with torch.no_grad():
        for i, xb in enumerate(xbs):
            x = torch.from_numpy(xb.copy()).permute(2, 0, 1).float().div(255)[None]
            z = g.make_noise(x, torch.Generator().manual_seed(seed * 100_003 + i))
            out.append(g(x, z)[0].mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    return out


def grid(path: Path, xbs, xds, targets, rows: int = 4, zoom: int = 3) -> None:
    """Xb | Xd | target | residual Xd x4 | residual target x4, one held-out image per row."""
    tiles = []
    for xb, xd, t in list(zip(xbs, xds, targets))[:rows]:
        res = lambda a, xb=xb: np.clip(128 + 4 * (a.astype(np.int16) - xb.astype(np.int16)), 0, 255).astype(np.uint8)  # noqa: E731
        tiles.append(np.concatenate([xb, xd, t, res(xd), res(t)], axis=1))
    img = Image.fromarray(np.concatenate(tiles, axis=0))
    img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST).save(path)


# ----------------------------------------------------------------------------- table


COLUMNS = [
    ("case", "case"),
    ("steps", "steps"),
    ("min", "train min"),
    ("grain", "grain Xd/target"),
    ("colour", "colour shift (levels)"),
    ("border", "border ratio (target)"),
    ("sharp", "sharpness progress"),
    ("block", "blockiness grid/best Xd (target)"),
    ("spec", "residual spectrum dist (Xb=1)"),
    ("pass", "targets"),
]


def row(case: Case, r: dict) -> dict[str, str]:
    """One table row."""
    m, v = r["metrics"], r["checks"]
    fmt = lambda x, p=2: "-" if x is None else f"{x:.{p}f}"  # noqa: E731
    return {
        "case": case.name,
        "steps": str(r["train"]["steps"]),
        "min": f"{r['train']['seconds'] / 60:.1f}",
        "grain": f"{fmt(m['grain_ratio'])} ({fmt(m['grain_xd'])}/{fmt(m['grain_target'])})",
        "colour": f"{m['colour_shift_max']:.2f} (t {max(m['colour_shift_target']):.2f})",
        "border": f"{m['border_ratio_xd']:.2f} ({m['border_ratio_target']:.2f})",
        "sharp": fmt(m["sharpness_progress"]) if case.sharpness else "n/a",
        "block": f"{m['blockiness_xd'][0]:.2f}/{m['blockiness_xd'][1]:.2f} ({m['blockiness_target'][0]:.2f}/{m['blockiness_target'][1]:.2f})",
        "spec": fmt(m["spectrum_distance_xd"]),
        "pass": "PASS" if all(v.values()) else "fail: " + ",".join(k for k, ok in v.items() if not ok),
    }


def table(rows: list[dict[str, str]]) -> str:
    """Markdown table of the rows."""
    lines = ["| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[k] for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def combined_table(dirs: list[Path]) -> str:
    """One table over several runs (each row labelled with its run's --set overrides)."""
    rows = []
    for d in dirs:
        rep = json.loads((d / "results.json").read_text())
        label = " ".join(s for s in rep["sets"] if not s.startswith("train.iterations")) or Path(rep["recipe"]).name
        for name, r in rep["cases"].items():
            rows.append({**row(CASES[name], r), "case": f"{name}: {label}"})
    return table(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="idphoto", help="built-in recipe name (idphoto, paper) or a recipe TOML file")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override KEY=VALUE (repeatable)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--budget-min", type=float, default=10.0, help="training time limit per case (minutes)")
    ap.add_argument("--n-train", type=int, default=480, help="HR and real-LR training patches per case")
    ap.add_argument("--n-heldout", type=int, default=24)
    ap.add_argument("--hr-size", type=int, default=64, help="training HR patch side (LR is half)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_learning_out")
    ap.add_argument("--table-from", nargs="+", metavar="DIR", help="print one table from earlier runs' results.json (ablations)")
    args = ap.parse_args(argv)
    if args.table_from:
        print(combined_table([Path(d) for d in args.table_from]))
        return 0
    out = Path(args.out)
    results, rows = {}, []
    for name in args.cases.split(","):
        case = CASES[name]
        root = out / name
        if root.exists():
            raise SystemExit(f"{root}: exists; choose another --out")
        held = build_case_data(root / "data", case, args.n_train, args.n_heldout, args.hr_size, args.seed)
        tr = train_case(root / "data", root / "run", args.recipe, args.sets, args.budget_min, args.hr_size)
        xds = run_generator(root / "run" / "generator.safetensors", held["xb"], args.seed)
        metrics = paired_report(held["xb"], xds, held["target"])
        grid(root / "grid.png", held["xb"], xds, held["target"])
        results[name] = {
            "degradation": case.describe(),
            "train": tr,
            "metrics": metrics,
            "checks": verdict(metrics, case.grain, case.sharpness),
        }
        rows.append(row(case, results[name]))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = {
        "recipe": args.recipe,
        "sets": args.sets,
        "budget_min": args.budget_min,
        "targets": TARGETS,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(sys.argv),
        "cases": results,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0 if all(all(r["checks"].values()) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
