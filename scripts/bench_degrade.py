"""Benchmark ``degrade``: end-to-end images/s next to the raw generator ceiling.

Writes a folder of 256x256 PNGs, then alternates, ``--repeats`` times:

* raw ceiling: the same generator, batch, layout and precision on random
  LR tensors in this process (no files, no decoding, no encoding);
* end to end: :func:`dsgan_cli.commands.degrade.degrade_folder` with default
  settings (decode, downscale to 128x128, G, round, PNG encode, atomic write).

With ``--pairs``, each repeat also times :func:`dsgan_cli.commands.pairs.make_pairs` on the same
folder (same engine; it writes HR and LR), and the table shows pairs / degrade images/s.

Alternating pairs keeps the ratio meaningful on a shared, noisy machine.
Prints a table (median and spread) and JSON. ``--compare`` also measures
the layout/precision/worker choices behind the defaults.

    python scripts/bench_degrade.py --images 32 --repeats 3 --json bench_degrade.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from benchio import emit_json  # scripts/ is on sys.path when a script runs
from PIL import Image

from dsgan_cli.commands.degrade import degrade_folder
from dsgan_cli.data.images import to_uint8
from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.engines.generate import run_generator
from dsgan_cli.engines.input_batches import DecodeDataset
from dsgan_cli.engines.run_settings import RunOptions, default_settings
from dsgan_cli.method.models import Generator, GeneratorConfig
from dsgan_cli.plumbing.writes import save_image_atomic


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """Photo-like PNGs: smooth gradients, blobs and mild noise (so PNG sizes are realistic)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    paths = []
    for i in range(n):
        img = np.zeros((size, size, 3))
        for c in range(3):
            a, b, d = rng.uniform(-1, 1, 3)
            img[..., c] = 0.5 + 0.25 * (a * xx + b * yy) + 0.1 * np.sin(2 * np.pi * (d * xx + yy))
        for _ in range(4):
            cx, cy, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.2)]
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = rng.uniform(0.1, 0.9, 3)
        img = np.clip(np.rint(img * 255 + rng.normal(0, 3, img.shape)), 0, 255).astype(np.uint8)
        paths.append(folder / f"img_{i:04d}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


def raw_ceiling(generator: torch.nn.Module, n: int, batch: int, lr: int, precision: str, channels_last: bool) -> float:
    """Images/s of G alone on random tensors, same batches as the folder run."""
    torch.manual_seed(0)
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    xs = [torch.rand(b, 3, lr, lr) for b in sizes]
    run_generator(generator, xs[0][:1], torch.device("cpu"), precision, channels_last)  # warm-up
    t = time.perf_counter()
    for x in xs:
        run_generator(generator, x, torch.device("cpu"), precision, channels_last)
    return n / (time.perf_counter() - t)


def per_image_costs(paths: list[Path], out: Path, scale: int, k: int = 8) -> dict[str, float]:
    """Serial milliseconds per image for the stages that run beside G (decode+downscale, encode+write)."""
    ds = DecodeDataset(paths[:k], scale)
    t = time.perf_counter()
    items = [ds[i] for i in range(len(ds))]
    decode = (time.perf_counter() - t) / k
    arrs = to_uint8(torch.stack([x for _, x, _, _, _ in items]))
    t = time.perf_counter()
    for i, a in enumerate(arrs):
        save_image_atomic(Image.fromarray(a.numpy()), out / f"probe_{i}.png", format="PNG")
    encode = (time.perf_counter() - t) / k
    return {"decode_downscale_ms": decode * 1e3, "encode_write_ms": encode * 1e3}


def spread(xs: list[float]) -> dict[str, float]:
    """Median, min and max of a list."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=256, help="HR size; outputs are size/2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="default: degrade's default")
    ap.add_argument("--workers", type=int, default=None, help="default: degrade's default")
    ap.add_argument("--res-blocks", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--compare", action="store_true", help="also time NCHW vs channels_last, bf16, workers 0 vs 1")
    ap.add_argument("--pairs", action="store_true", help="also time `pairs` on the same images in each repeat")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()

    settings = default_settings(torch.device("cpu"), 2, RunOptions(batch_size=args.batch_size, workers=args.workers))
    lr = args.size // 2
    with tempfile.TemporaryDirectory(prefix="bench-degrade-") as tmp:
        tmp = Path(tmp)
        paths = make_images(tmp / "hr", args.images, args.size)
        torch.manual_seed(0)
        ckpt = tmp / "generator.safetensors"
        save_generator(Generator(GeneratorConfig(args.res_blocks, args.channels)), ckpt, step=0, scale=2)
        generator, _ = load_generator(ckpt)
        generator = generator.to(memory_format=torch.channels_last) if settings.channels_last else generator

        rows = []
        for r in range(args.repeats):
            raw = raw_ceiling(generator, args.images, settings.batch_size, lr, settings.precision, settings.channels_last)
            stats: dict[str, float] = {}
            t = time.perf_counter()
            opts = RunOptions(batch_size=args.batch_size, workers=args.workers, progress=False, stats=stats)
            summary = degrade_folder(tmp / "hr", tmp / f"out{r}", ckpt, opts)
            wall = time.perf_counter() - t
            assert summary.written == args.images and not summary.failed, summary
            rows.append(
                {
                    "raw_ips": raw,
                    "e2e_ips": summary.images_per_second,
                    "e2e_wall_ips": args.images / wall,
                    "ratio": summary.images_per_second / raw,
                    "stages_s": stats,
                    "load_average_1min": os.getloadavg()[0],
                }
            )
            if args.pairs:
                from dsgan_cli.commands.pairs import make_pairs

                p = make_pairs(
                    tmp / "hr", tmp / f"pairs{r}", ckpt, RunOptions(batch_size=args.batch_size, workers=args.workers, progress=False)
                )
                assert p.written == args.images and not p.failed, p
                rows[-1]["pairs_ips"] = p.images_per_second
                rows[-1]["pairs_over_degrade"] = p.images_per_second / summary.images_per_second
            print(
                f"repeat {r + 1}: raw {raw:.3f} img/s, end-to-end {summary.images_per_second:.3f} img/s "
                f"(ratio {rows[-1]['ratio']:.3f}, load average {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
        # Measured on a side thread, where the pipeline runs these stages.
        costs: dict[str, float] = {}
        side = threading.Thread(target=lambda: costs.update(per_image_costs(paths, tmp / "probe", 2)))
        side.start()
        side.join()

        compare = {}
        if args.compare:
            n = settings.batch_size
            for name, (prec, cl, reps) in {
                "fp32 NCHW": ("fp32", False, 2),
                "fp32 channels_last": ("fp32", True, 2),
                "bf16 channels_last": ("bf16", True, 1),
            }.items():
                g = generator.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                compare[f"raw {name}"] = spread([raw_ceiling(g, n, settings.batch_size, lr, prec, cl) for _ in range(reps)])
            small = tmp / "hr_small"
            small.mkdir()
            for p in paths[: 2 * settings.batch_size]:
                shutil.copy(p, small / p.name)
            for w in (0, 1):
                ips = []
                for k in range(2):
                    s = degrade_folder(small, tmp / f"cmp{w}{k}", ckpt, RunOptions(workers=w, progress=False))
                    ips.append(s.images_per_second)
                compare[f"end-to-end workers={w}"] = spread(ips)

    result = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "images": args.images,
        "hr_size": args.size,
        "lr_size": lr,
        "batch_size": settings.batch_size,
        "workers": settings.workers,
        "encoder_threads": settings.encoder_threads,
        "precision": settings.precision,
        "channels_last": settings.channels_last,
        "generator": {"res_blocks": args.res_blocks, "channels": args.channels},
        "cpu_count": os.cpu_count(),
        "ratio_of_medians": None,
        "raw_ceiling_ips": spread([r["raw_ips"] for r in rows]),
        "end_to_end_ips": spread([r["e2e_ips"] for r in rows]),
        "end_to_end_wall_ips": spread([r["e2e_wall_ips"] for r in rows]),
        "ratio": spread([r["ratio"] for r in rows]),
        "stage_seconds_per_image": {k: statistics.median(r["stages_s"][k] for r in rows) / args.images for k in rows[0]["stages_s"]},
        "serial_ms_per_image": costs,
        "compare_ips": compare,
        "repeats": rows,
    }
    if args.pairs:
        result["pairs_ips"] = spread([r["pairs_ips"] for r in rows])
        result["pairs_over_degrade"] = spread([r["pairs_over_degrade"] for r in rows])

    result["ratio_of_medians"] = result["end_to_end_ips"]["median"] / result["raw_ceiling_ips"]["median"]
    print(
        f"\ndegrade benchmark: {args.images} x {args.size}px PNG -> {lr}px PNG, batch {settings.batch_size}, "
        f"workers {settings.workers}, {settings.precision}, channels_last={settings.channels_last}, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} repeats"
    )
    print(f"{'measure':<38}{'median':>10}{'min':>10}{'max':>10}")
    for label, key in (
        ("raw ceiling (img/s)", "raw_ceiling_ips"),
        ("end to end, loop (img/s)", "end_to_end_ips"),
        ("end to end, incl. start-up (img/s)", "end_to_end_wall_ips"),
        ("ratio end-to-end / raw", "ratio"),
    ):
        s = result[key]
        print(f"{label:<38}{s['median']:>10.3f}{s['min']:>10.3f}{s['max']:>10.3f}")
    print(f"{'ratio of the medians':<38}{result['ratio_of_medians']:>10.3f}")
    if args.pairs:
        for label, key in (("pairs, loop (img/s)", "pairs_ips"), ("pairs / degrade (same repeat)", "pairs_over_degrade")):
            s = result[key]
            print(f"{label:<38}{s['median']:>10.3f}{s['min']:>10.3f}{s['max']:>10.3f}")
    st = result["stage_seconds_per_image"]
    result["generator_share_of_loop"] = st["generator"] / st["total"]
    print(f"{'G busy / loop time (pipeline share)':<38}{result['generator_share_of_loop']:>10.3f}")
    print("stage seconds per image (median run; encode_write runs on its own thread, overlapped):")
    for k, v in result["stage_seconds_per_image"].items():
        print(f"  {k:<20}{v * 1e3:>10.2f} ms")
    print(
        f"serial cost beside G: decode+downscale {costs['decode_downscale_ms']:.2f} ms, "
        f"PNG encode+atomic write {costs['encode_write_ms']:.2f} ms per image"
    )
    for k, s in compare.items():
        print(f"  {k:<36}{s['median']:>10.3f}{s['min']:>10.3f}{s['max']:>10.3f}")
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
