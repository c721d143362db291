#!/usr/bin/env python3
"""Do the true degradation's pairs beat bicubic pairs? A check of ``bench_sr.py``'s yardstick, per held-out photo.

``bench_sr.py`` measures DSGAN pairs between two references: SR trained on bicubic pairs (0) and on oracle
pairs, LR = the true degradation (1). Where the oracle does not beat bicubic pairs, the gap closed means little
and "above bicubic pairs" asks DSGAN to beat the true degradation. This trains only those two references, on
the same data and crops as ``bench_sr.py`` (no DSGAN; pass its ``--sr-seeds``), at each of ``--sr-steps``: if
the oracle's deficit were the SR net's short training, it would shrink with more steps. The gain is also split
by held-out photo (each held-out patch comes from one of ``bench_learning.HELDOUT_PHOTOS``), to show where it is
won or lost.

Usage:
    .venv/bin/python scripts/bench_oracle.py --family 12 --family-seed 0 --draws 7,8 --sr-steps 600,2400 \
        --sr-seeds 0 --out DIR

Writes OUT/results.json and OUT/table.md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_learning import CASES, HELDOUT_PHOTOS, HELDOUT_SIDES, build_case_data  # noqa: E402
from bench_sr import heldout_set, parse_draws, reference_pairs  # noqa: E402

from dsgan_cli.data import known  # noqa: E402
from dsgan_cli.metrics.srcheck import psnr, super_resolve, train_sr  # noqa: E402


def heldout_photos(n: int, size: int) -> list[str]:
    """The photo each of the first ``n`` held-out patches of side ``size`` is cut from: ``known.patches`` takes, in
    turn, the images of the held-out pyramid (photo by photo, one per side) that are at least ``size`` px."""
    names = [name for name in HELDOUT_PHOTOS for _ in HELDOUT_SIDES]
    kept = [name for name, img in zip(names, known.pyramid(HELDOUT_PHOTOS, HELDOUT_SIDES)) if min(img.shape[:2]) >= size]
    return [kept[i % len(kept)] for i in range(n)]


def run_case(case, root: Path, args) -> dict:
    """Bicubic and oracle SR nets per SR seed and step count; PSNR overall and per held-out photo."""
    build_case_data(root, case, args.n_train, 1, args.hr_size, args.seed)
    hr, lrs = reference_pairs(root, case, args.seed)
    held_hr, held_lr = heldout_set(case, args.n_heldout, args.heldout_size, args.seed)
    photos = heldout_photos(len(held_hr), args.heldout_size)
    runs = []
    for steps in args.sr_steps:
        for s in args.sr_seeds:
            t0 = time.perf_counter()
            nets = {k: train_sr(hr, lr, s, steps, args.sr_batch, args.sr_crop) for k, lr in lrs.items()}
            per = {k: [psnr(a, b) for a, b in zip(super_resolve(net, held_lr), held_hr)] for k, net in nets.items()}
            gain = np.array(per["oracle"]) - np.array(per["bicubic"])
            runs.append(
                {
                    "sr_steps": steps,
                    "sr_seed": s,
                    "psnr": {k: float(np.mean(v)) for k, v in per.items()},
                    "oracle_gain_db": float(gain.mean()),
                    "oracle_gain_by_photo_db": {p: float(gain[[q == p for q in photos]].mean()) for p in HELDOUT_PHOTOS if p in photos},
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(f"{case.name} steps {steps} SR seed {s}: oracle gain {gain.mean():+.2f} dB", flush=True)
    return {"degradation": case.describe(), "runs": runs}


def table(results: dict) -> str:
    """One row per case and step count: the oracle's gain over bicubic pairs (mean over SR seeds), overall and per photo."""
    head = ["case", "SR steps", "oracle gain dB", *(f"on {p}" for p in HELDOUT_PHOTOS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        for steps in dict.fromkeys(x["sr_steps"] for x in r["runs"]):
            runs = [x for x in r["runs"] if x["sr_steps"] == steps]
            by = [np.mean([x["oracle_gain_by_photo_db"].get(p, np.nan) for x in runs]) for p in HELDOUT_PHOTOS]
            cells = [name, str(steps), f"{np.mean([x['oracle_gain_db'] for x in runs]):+.2f}", *(f"{v:+.2f}" for v in by)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="noise,blur_noise,jpeg,demo", help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--family", type=int, default=0, help="use N drawn degradations (dsgan_cli.data.family) instead of --cases")
    ap.add_argument("--family-seed", type=int, default=0)
    ap.add_argument("--draws", default=None, help="subset of the family's draws, e.g. 0-5 or 1,4 (default: all)")
    ap.add_argument("--sr-steps", default="600", help="comma-separated SR training step counts")
    ap.add_argument("--sr-seeds", default="0,1", help="comma-separated SR training seeds (bench_sr.py's default)")
    # The rest as in bench_sr.py, so that the references are the ones its tables use.
    ap.add_argument("--n-train", type=int, default=480)
    ap.add_argument("--hr-size", type=int, default=64)
    ap.add_argument("--n-heldout", type=int, default=32)
    ap.add_argument("--heldout-size", type=int, default=128)
    ap.add_argument("--sr-batch", type=int, default=16)
    ap.add_argument("--sr-crop", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench_oracle_out")
    args = ap.parse_args(argv)
    args.sr_steps = [int(s) for s in args.sr_steps.split(",")]
    args.sr_seeds = [int(s) for s in args.sr_seeds.split(",")]
    if args.family:
        from dsgan_cli.data.family import sample_family

        family = sample_family(args.family_seed, args.family)
        cases = {family[i].name: family[i] for i in parse_draws(args.draws, args.family)}
    else:
        cases = {name: CASES[name] for name in args.cases.split(",")}
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out}: exists; choose another --out")
    results = {}
    for name, case in cases.items():
        results[name] = run_case(case, out / name, args)
        report = {
            "family_seed": args.family_seed if args.family else None,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join(sys.argv),
            "args": vars(args),
            "cases": results,
        }
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")  # after every case: a stop keeps what ran
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
