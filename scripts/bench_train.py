"""Training speed on the current device: steps/s, images/s and where a step's time goes.

    .venv/bin/python scripts/bench_train.py --batch 8 --size 128            # CPU: slow, keep --steps small
    .venv/bin/python scripts/bench_train.py --batch 16 --size 128 --steps 20 --precision bf16   # GPU

Runs the training step of ``dsgan_cli.train`` (same models, losses, data
sampler, D step then G step) on in-memory images, with a timer around each
phase, once per memory layout (channels_last and NCHW)
and per perceptual network (``--nets vgg19,lpips-alex``), and prints a table
plus JSON (``--json PATH`` to write it to a file as well). Phases:

- data: micro-batch from the sampler (indexing, crops/flips) + to device + bicubic Xb
- g_forward: Xd = G(Xb)
- d_step: D on real LR and on detached Xd, loss, backward, Adam
- perceptual_fwd: VGG19 or LPIPS-AlexNet features of Xb (no grad) and of Xd, distance
- g_loss_fwd: colour loss and D(Xd) for the GAN loss
- g_backward_step: backward through D (input gradients), VGG and G, then Adam
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsgan_cli.data import MicroBatches  # noqa: E402
from dsgan_cli.losses import ColorLoss, build_perceptual, gan_loss_discriminator, gan_loss_generator  # noqa: E402
from dsgan_cli.models import Discriminator, Generator, downscale  # noqa: E402
from dsgan_cli.recipe import load_recipe  # noqa: E402

PHASES = ["data", "g_forward", "d_step", "perceptual_fwd", "g_loss_fwd", "g_backward_step"]


def run_layout(recipe, layout: str, batch: int, size: int, steps: int, warmup: int, device: torch.device,
               precision: str, perceptual_weights: str, net: str = "vgg19") -> dict:
    """Time ``warmup + steps`` training steps in one memory layout; returns per-phase seconds per step."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    scale = recipe.data.scale
    g = torch.Generator().manual_seed(0)
    hr_u8 = torch.randint(0, 256, (32, 3, size * scale, size * scale), dtype=torch.uint8, generator=g)
    lr_u8 = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=g)
    data = MicroBatches(hr_u8, lr_u8, batch_size=batch, seed=0, scale=scale, flip=True)

    torch.manual_seed(0)
    G = Generator(recipe.model.n_res_blocks, recipe.model.channels).to(device, memory_format=fmt)
    D = Discriminator(recipe.model.filter_kernel).to(device, memory_format=fmt)
    perceptual = build_perceptual(net, recipe.perceptual.layers, perceptual_weights).to(device, memory_format=fmt)
    color = ColorLoss(recipe.model.filter_kernel).to(device)
    betas = (recipe.optim.beta1, recipe.optim.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=recipe.optim.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe.optim.lr, betas=betas)
    w = recipe.loss
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    totals = {p: 0.0 for p in PHASES}
    for step in range(warmup + steps):
        t = {}
        sync()
        t0 = time.perf_counter()
        hr, real = data[step]
        xb = downscale(hr.to(device).float().div_(255), scale).contiguous(memory_format=fmt)
        real = real.to(device).float().div_(255).contiguous(memory_format=fmt)
        sync()
        t["data"] = time.perf_counter()
        with autocast():
            xd = G(xb)
        sync()
        t["g_forward"] = time.perf_counter()
        opt_d.zero_grad(set_to_none=True)
        with autocast():
            loss_d = gan_loss_discriminator(D(real), D(xd.detach()))
        loss_d.backward()
        opt_d.step()
        sync()
        t["d_step"] = time.perf_counter()
        D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with autocast():
            with torch.no_grad():
                xb_feats = perceptual.features(xb)
            loss_p = perceptual(xd, y_feats=xb_feats)
        sync()
        t["perceptual_fwd"] = time.perf_counter()
        with autocast():
            loss_g = w.w_color * color(xd, xb) + w.w_gan * gan_loss_generator(D(xd)) + w.w_perceptual * loss_p
        sync()
        t["g_loss_fwd"] = time.perf_counter()
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        sync()
        t["g_backward_step"] = time.perf_counter()
        if step >= warmup:
            prev = t0
            for p in PHASES:
                totals[p] += t[p] - prev
                prev = t[p]
        print(f"  {net} {layout}: step {step + 1}/{warmup + steps} {t['g_backward_step'] - t0:.2f}s"
              f"{' (warm-up)' if step < warmup else ''}", file=sys.stderr, flush=True)
    per_step = {p: totals[p] / steps for p in PHASES}
    step_s = sum(per_step.values())
    return {"net": net, "layout": layout, "seconds_per_step": step_s, "steps_per_s": 1 / step_s, "images_per_s": batch / step_s,
            "phases_s": per_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "idphoto.toml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="LR side (Xb, Xd, real LR); HR is size x data.scale")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per layout")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layouts", default="channels_last,contiguous")
    ap.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--nets", default="vgg19,lpips-alex", help="perceptual networks to time (perceptual.net values)")
    ap.add_argument("--perceptual-weights", default="random", help="'random' keeps the benchmark offline (same cost)")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = [run_layout(recipe, layout, args.batch, args.size, args.steps, args.warmup, device, args.precision,
                          args.perceptual_weights, net) for net in args.nets.split(",") for layout in args.layouts.split(",")]
    fastest = min(results, key=lambda r: r["seconds_per_step"])["layout"]
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "recipe": str(args.recipe),
        "batch": args.batch, "lr_size": args.size, "hr_size": args.size * recipe.data.scale,
        "precision": args.precision, "steps": args.steps, "warmup": args.warmup,
        "results": results, "fastest_layout": fastest,
    }
    header = f"{'net':<12}{'layout':<14}{'s/step':>9}{'steps/s':>9}{'img/s':>8}" + "".join(f"{p:>17}" for p in PHASES)
    print(f"device: {report['device']}, batch {args.batch}, LR {args.size}px, HR {report['hr_size']}px, precision {args.precision}")
    print(header)
    for r in results:
        print(f"{r['net']:<12}{r['layout']:<14}{r['seconds_per_step']:>9.3f}{r['steps_per_s']:>9.4f}{r['images_per_s']:>8.3f}"
              + "".join(f"{r['phases_s'][p]:>17.3f}" for p in PHASES))
    print(f"fastest layout: {fastest}")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
