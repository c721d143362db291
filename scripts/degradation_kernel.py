#!/usr/bin/env python3
"""Which blur did G learn? The least-squares linear kernel from Xb to G's output, against the true degradation's.

For a ``scripts/bench_sr.py --family`` draw folder (its ``data/hr`` and ``run/generator.safetensors``), fits one
k x k kernel (shared by the colour channels) mapping Xb to (a) the draw's true degradation of the same Xb and (b)
G's deterministic output and full output, and prints each kernel's sum, the standard deviations along its major and
minor axes, the major axis's angle (degrees counter-clockwise from x, y up) and the residual the linear fit leaves (noise
and everything non-linear, in levels of 255). A diagnostic: the verdict on a generator is bench_sr's downstream gap.

Usage:
    .venv/bin/python scripts/degradation_kernel.py OUT/draw10 [--family-seed 0] [--family 12] [--kernel 9] [--n 240]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dsgan_cli.data import known  # noqa: E402
from dsgan_cli.data.family import sample_family  # noqa: E402
from dsgan_cli.engines.checkpoint import load_generator  # noqa: E402
from dsgan_cli.method.models import kernel_axes  # noqa: E402


def batch(images: list[np.ndarray]) -> torch.Tensor:
    """HWC uint8 images -> (N, 3, H, W) float64 in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).double() / 255


def fit_kernel(x: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """The k x k kernel w minimising |w * x - y|^2 over all pixels and channels (valid borders), and the residual std."""
    cols = F.unfold(x.reshape(-1, 1, *x.shape[-2:]), k).permute(0, 2, 1).reshape(-1, k * k)
    target = y.reshape(-1, 1, *y.shape[-2:])[..., k // 2 : -(k // 2), k // 2 : -(k // 2)].reshape(-1, 1)
    w = torch.linalg.lstsq(cols, target).solution
    return w.reshape(k, k), float((cols @ w - target).std() * 255)


def describe(w: torch.Tensor) -> str:
    """Sum, major / minor standard deviation and major-axis angle (counter-clockwise, y up) of a kernel's weights."""
    major, minor, angle = kernel_axes(w)
    return f"sum {w.sum():.3f}, sd major {major:.2f} / minor {minor:.2f} px, angle {angle:.0f} deg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("draw_dir", type=Path, help="a draw's folder of a bench_sr.py --family run (e.g. OUT/draw10)")
    ap.add_argument("--family-seed", type=int, default=0)
    ap.add_argument("--family", type=int, default=12, help="the family size the run drew")
    ap.add_argument("--kernel", type=int, default=9, help="fitted kernel side (odd)")
    ap.add_argument("--n", type=int, default=240, help="HR training images used")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    draw = sample_family(args.family_seed, args.family)[int(args.draw_dir.name.removeprefix("draw"))]
    hr = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((args.draw_dir / "data" / "hr").glob("*.png"))[: args.n]]
    xb_images = [known.xb_of(h, 2) for h in hr]
    xb = batch(xb_images)
    rng = np.random.default_rng(7)
    truth = batch([draw.degrade(x, rng) for x in xb_images])
    g, _ = load_generator(args.draw_dir / "run" / "generator.safetensors")
    g = g.double().eval()
    with torch.no_grad():
        outs = [g(xb[i : i + 40], with_deterministic=True) for i in range(0, len(xb), 40)]
    full, det = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    print(draw.describe())
    for name, y in (("true degradation", truth), ("G, deterministic", det), ("G, with its noise", full)):
        w, residual = fit_kernel(xb, y, args.kernel)
        print(f"{name:18s} {describe(w)}; residual {residual:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
