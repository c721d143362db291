#!/usr/bin/env python3
"""Do DSGAN pairs train a better super-resolution network? The downstream test of the method.

For each known-degradation case of ``bench_learning.py`` (noise, blur + noise, JPEG, demo):

1. build the case's data (clean HR patches, unpaired real LR = the true degradation of other photos) and train
   DSGAN on it with the real ``dsgan train`` CLI and the chosen recipe;
2. write (HR, LR) pairs from the clean HR training set with the real ``dsgan pairs`` CLI, as a user would;
3. train one small x2 SR network (defined here: a few convolutions + pixel shuffle, L1 loss) three times with
   the same seed, crops and steps: on bicubic pairs (LR = Xb), on DSGAN pairs (LR = G(Xb)), and on oracle
   pairs (LR = the case's true degradation of Xb);
4. test each on held-out photos (a third, disjoint set) whose LR went through the true degradation: PSNR and
   SSIM against HR (and LPIPS with ``--lpips-alexnet FILE``), and per metric
   ``gap closed = (dsgan - bicubic) / (oracle - bicubic)`` (for LPIPS, lower is better: the same formula).

Repeated over ``--sr-seeds`` SR seeds (same DSGAN generator), so the spread of the SR training is in the table.

``--family N`` runs the same test on N degradations drawn from :mod:`dsgan_cli.data.family` (seed
``--family-seed``; ``--draws`` picks a subset, so that a family can be split over processes) instead of the named
cases. The gap closed is pooled over SR seeds (sum of DSGAN gains / sum of oracle gains); draws where the oracle
gains less than ``--min-oracle-gain`` dB are shown but not counted. ``--summarize DIR [DIR ...]`` merges the
results of such runs into one family table: a row per draw, then the median, the minimum, the number of draws
below bicubic pairs and the wall time. The same draw in several folders (runs with other DSGAN seeds,
``--set train.seed=N``) is pooled: sums over DSGAN runs and SR seeds, with each run's own gap closed shown, since
one DSGAN run's outcome moves a draw's gap by up to about 0.5. An entry ``FILE.json:DRAWS`` (e.g.
``benchmarks/sr_family_X.json:0-2,5``) takes those draws' runs from a kept results or family JSON instead: draws a
change of method leaves as they were (the same readings, so the same training) are carried, not run again.

Usage:
    .venv/bin/python scripts/bench_sr.py [--recipe idphoto|paper|FILE.toml] [--set KEY=VALUE ...]
        [--cases noise,blur_noise,jpeg,demo] [--budget-min 5] [--sr-steps 600] [--sr-seeds 0,1] [--out DIR]
    .venv/bin/python scripts/bench_sr.py --family 12 [--draws 0-5] --sr-seeds 0,1,2 --out DIR
    .venv/bin/python scripts/bench_sr.py --summarize DIR1 DIR2 [DIR3 DIR4 ...] --out DIR

Writes OUT/results.json, OUT/table.md and OUT/CASE/sr_grid.png; prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_learning import CASES, HELDOUT_PHOTOS, HELDOUT_SIDES, Case, build_case_data, train_case  # noqa: E402

from dsgan_cli.data import known  # noqa: E402
from dsgan_cli.metrics.srcheck import scores, super_resolve, train_sr  # noqa: E402

KINDS = ("bicubic", "dsgan", "oracle")


# ----------------------------------------------------------------------------- data


def read_pngs(folder: Path) -> dict[str, np.ndarray]:
    """Every PNG in ``folder`` by name, as uint8 RGB arrays."""
    return {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))}


def write_dsgan_pairs(hr_dir: Path, generator: Path, out: Path, seed: int) -> dict[str, np.ndarray]:
    """LR of each HR training image from the real ``dsgan pairs`` CLI (a subprocess, as a user runs it)."""
    cmd = [sys.executable, "-m", "dsgan_cli", "pairs", str(hr_dir), str(out), "-c", str(generator), "--seed", str(seed), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dsgan pairs failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    hr, lr = read_pngs(out / "hr"), read_pngs(out / "lr")
    src = read_pngs(hr_dir)
    if sorted(hr) != sorted(src) or any(not np.array_equal(hr[k], src[k]) for k in src):
        raise SystemExit(f"{out}/hr: pairs' HR differs from the training HR; the comparison would not be paired")
    return lr


def reference_pairs(data: Path, case: Case, seed: int) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """The HR training images (by name) and the LR of the two references: bicubic (Xb) and oracle (the case's true
    degradation of Xb, seeded by ``seed``)."""
    hr = read_pngs(data / "hr")
    xb = [known.xb_of(hr[n], 2) for n in sorted(hr)]
    rng = np.random.default_rng(seed + 7)
    return [hr[n] for n in sorted(hr)], {"bicubic": xb, "oracle": [case.degrade(x, rng) for x in xb]}


def pair_sets(data: Path, case: Case, generator: Path, pairs_dir: Path, seed: int) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
    """The HR training images and, per kind, the LR each SR training sees (same order, same HR)."""
    hr, refs = reference_pairs(data, case, seed)
    dsgan = write_dsgan_pairs(data / "hr", generator, pairs_dir, seed)  # its names are the HR's, checked
    return hr, {"bicubic": refs["bicubic"], "dsgan": [dsgan[n] for n in sorted(dsgan)], "oracle": refs["oracle"]}


def heldout_set(case: Case, n: int, hr_size: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Held-out (HR, real LR) pairs: photos no training set uses, LR = the true degradation of Xb."""
    rng = np.random.default_rng(seed + 1_000)
    hr = known.patches(known.pyramid(HELDOUT_PHOTOS, HELDOUT_SIDES), n, hr_size, rng, flip=False)
    return hr, [case.degrade(known.xb_of(h, 2), rng) for h in hr]


def residual_stats(xbs: list[np.ndarray], lrs: list[np.ndarray]) -> dict[str, float]:
    """Diagnostics of the residuals LR - Xb: std per channel, mean correlation between colour channels (white
    sensor noise: ~0; grey grain: ~1) and lag-1 spatial autocorrelation (white: ~0; blur or blotches: > 0)."""
    r = np.stack([lr.astype(np.float64) - xb.astype(np.float64) for xb, lr in zip(xbs, lrs)])  # N, H, W, 3
    r = r - r.mean(axis=(1, 2), keepdims=True)
    flat = r.reshape(-1, 3)
    corr = np.corrcoef(flat.T)
    lag = float(np.mean(r[:, 1:] * r[:, :-1]) / max(np.mean(r**2), 1e-12))
    return {
        "std_rgb": [round(float(v), 3) for v in flat.std(axis=0)],
        "channel_correlation": round(float((corr[0, 1] + corr[0, 2] + corr[1, 2]) / 3), 3),
        "lag1_autocorrelation": round(lag, 3),
    }


def gap_closed(m: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """(dsgan - bicubic) / (oracle - bicubic) per metric; None where oracle and bicubic tie."""
    out = {}
    for k in m["bicubic"]:
        span = m["oracle"][k] - m["bicubic"][k]
        out[k] = None if abs(span) < 1e-9 else (m["dsgan"][k] - m["bicubic"][k]) / span
    return out


def sr_grid(path: Path, lrs: list[np.ndarray], srs: dict[str, list[np.ndarray]], hrs: list[np.ndarray], rows: int = 4) -> None:
    """Real LR (nearest x2) | SR from bicubic | from DSGAN | from oracle pairs | HR, one held-out image per row."""
    tiles = []
    for i in range(min(rows, len(hrs))):
        up = np.asarray(Image.fromarray(lrs[i]).resize(hrs[i].shape[1::-1], Image.Resampling.NEAREST))
        tiles.append(np.concatenate([up, *(srs[k][i] for k in KINDS), hrs[i]], axis=1))
    img = Image.fromarray(np.concatenate(tiles, axis=0))
    img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST).save(path)


# ----------------------------------------------------------------------------- one case


def run_case(case: Case, root: Path, args) -> dict:
    """DSGAN training, pairs, three SR trainings per seed and their scores for one case."""
    t0 = time.perf_counter()
    build_case_data(root / "data", case, args.n_train, 1, args.hr_size, args.seed)
    tr = train_case(root / "data", root / "run", args.recipe, args.sets, args.budget_min, args.hr_size)
    t1 = time.perf_counter()
    hr, lrs = pair_sets(root / "data", case, root / "run" / "generator.safetensors", root / "pairs", args.seed)
    held_hr, held_lr = heldout_set(case, args.n_heldout, args.heldout_size, args.seed)
    residuals = {k: residual_stats(lrs["bicubic"], lrs[k]) for k in ("dsgan", "oracle")}
    print(f"{case.name}: residuals LR - Xb {json.dumps(residuals)}", flush=True)
    per_seed = []
    for s in args.sr_seeds:
        known_scores = reused(args.reuse, case, s)
        kinds = [k for k in KINDS if k not in known_scores]
        srs = {k: super_resolve(train_sr(hr, lrs[k], s, args.sr_steps, args.sr_batch, args.sr_crop), held_lr) for k in kinds}
        metrics = {**known_scores, **{k: scores(srs[k], held_hr, args.lpips_alexnet) for k in kinds}}
        metrics = {k: metrics[k] for k in KINDS}
        per_seed.append({"sr_seed": s, "metrics": metrics, "gap_closed": gap_closed(metrics), "reused": sorted(known_scores)})
        if s == args.sr_seeds[0] and len(srs) == len(KINDS):
            sr_grid(root / "sr_grid.png", held_lr, srs, held_hr)
    mean = {k: {m: float(np.mean([r["metrics"][k][m] for r in per_seed])) for m in per_seed[0]["metrics"][k]} for k in KINDS}
    gaps = [r["gap_closed"] for r in per_seed]
    return {
        "degradation": case.describe(),
        "train": tr,
        "dsgan_seconds": round(t1 - t0, 1),
        "case_seconds": round(time.perf_counter() - t0, 1),
        "residuals": residuals,
        "per_seed": per_seed,
        "mean": mean,
        "gap_closed": gap_closed(mean),
        "gap_closed_range": {
            m: [min(g[m] for g in gaps if g[m] is not None), max(g[m] for g in gaps if g[m] is not None)]
            for m in gaps[0]
            if all(g[m] is not None for g in gaps)
        },
    }


def reused(runs: dict | None, case: Case, sr_seed: int) -> dict[str, dict[str, float]]:
    """The bicubic and oracle scores of an earlier run of the same draw and SR seed (they do not depend on the
    recipe: same data, same SR seed, same steps; on another CPU they differ by up to 0.1 dB), or {} when there is none."""
    old = (runs or {}).get(case.name)
    if not old or old["degradation"] != case.describe():
        return {}
    for r in old["per_seed"]:
        if r["sr_seed"] == sr_seed:
            return {k: r["metrics"][k] for k in ("bicubic", "oracle")}
    return {}


# ----------------------------------------------------------------------------- table


def row(name: str, r: dict) -> str:
    """One markdown table row."""
    m, g, rng = r["mean"], r["gap_closed"], r["gap_closed_range"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    cells = [
        name,
        str(r["train"]["steps"]),
        f"{r['case_seconds'] / 60:.1f}",
        " / ".join(f"{m[k]['psnr']:.2f}" for k in KINDS),
        f"{fmt(g['psnr'])} [{fmt(rng['psnr'][0])}, {fmt(rng['psnr'][1])}]" if "psnr" in rng else fmt(g["psnr"]),
        " / ".join(f"{m[k]['ssim']:.4f}" for k in KINDS),
        fmt(g["ssim"]),
    ]
    if "lpips" in m["bicubic"]:
        cells += [" / ".join(f"{m[k]['lpips']:.4f}" for k in KINDS), fmt(g["lpips"])]
    return "| " + " | ".join(cells) + " |"


def table(rows: list[str], lpips: bool) -> str:
    """Markdown table with a header."""
    head = [
        "case",
        "DSGAN steps",
        "case min",
        "PSNR bicubic / dsgan / oracle",
        "gap closed PSNR [per-seed range]",
        "SSIM bicubic / dsgan / oracle",
        "gap closed SSIM",
    ]
    if lpips:
        head += ["LPIPS bicubic / dsgan / oracle", "gap closed LPIPS"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows])


# ----------------------------------------------------------------------------- the family


def parse_draws(spec: str | None, n: int) -> list[int]:
    """Draw indices from ``"0-5"``, ``"1,4,7"`` or None (all ``n``)."""
    if not spec:
        return list(range(n))
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    if any(not 0 <= i < n for i in out):
        raise SystemExit(f"--draws {spec}: indices must lie in 0..{n - 1}")
    return out


def gains(r: dict) -> dict[str, list[float]]:
    """PSNR gains over bicubic pairs per SR seed, of DSGAN and of oracle pairs (dB)."""
    return {k: [s["metrics"][k]["psnr"] - s["metrics"]["bicubic"]["psnr"] for s in r["per_seed"]] for k in ("dsgan", "oracle")}


def family_row(name: str, runs: list[dict], min_gain: float) -> dict:
    """One draw's pooled gap closed (sum of DSGAN gains / sum of oracle gains over SR seeds, and over DSGAN runs when
    several runs of the draw are merged), the spread per SR seed and per DSGAN run, and whether it counts (the
    oracle gains at least ``min_gain`` dB) or lies below bicubic pairs."""
    each = [gains(r) for r in runs]
    g = {k: [x for e in each for x in e[k]] for k in ("dsgan", "oracle")}
    oracle, dsgan = float(np.mean(g["oracle"])), float(np.mean(g["dsgan"]))
    ratio = lambda d, o: d / o if abs(o) > 1e-9 else None  # noqa: E731
    return {
        "draw": name,
        "degradation": runs[0]["degradation"],
        "oracle_gain_db": oracle,
        "dsgan_gain_db": dsgan,
        "gap_closed": ratio(dsgan, oracle),
        "per_seed": [ratio(d, o) for d, o in zip(g["dsgan"], g["oracle"])],
        "per_dsgan_run": [ratio(float(np.mean(e["dsgan"])), float(np.mean(e["oracle"]))) for e in each],
        "counted": oracle >= min_gain,
        "below_bicubic": dsgan < 0,
        "dsgan_seconds": max(r["dsgan_seconds"] for r in runs),
        "case_seconds": sum(r["case_seconds"] for r in runs),
    }


def family_summary(rows: list[dict]) -> dict:
    """Median and minimum pooled gap closed over the counted draws, draws below bicubic pairs, wall time."""
    counted = [r["gap_closed"] for r in rows if r["counted"]]
    return {
        "draws": len(rows),
        "counted": len(counted),
        "median_gap_closed": float(np.median(counted)) if counted else None,
        "min_gap_closed": float(min(counted)) if counted else None,
        "below_bicubic": sum(r["below_bicubic"] for r in rows),
        "max_dsgan_minutes": max(r["dsgan_seconds"] for r in rows) / 60,
        "total_minutes": sum(r["case_seconds"] for r in rows) / 60,
    }


def family_table(rows: list[dict], summary: dict) -> str:
    """Markdown: a row per draw, then the summary lines."""
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    out = [
        "| draw | degradation | oracle gain dB | DSGAN gain dB | gap closed (pooled) | per SR seed | per DSGAN run | counted | DSGAN min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['draw']} | {r['degradation']} | {r['oracle_gain_db']:+.2f} | {r['dsgan_gain_db']:+.2f} | "
            f"**{fmt(r['gap_closed'])}** | {', '.join(fmt(x) for x in r['per_seed'])} | "
            f"{', '.join(fmt(x) for x in r['per_dsgan_run'])} | "
            f"{'yes' if r['counted'] else 'no'} | {r['dsgan_seconds'] / 60:.1f} |"
        )
    out += [
        "",
        f"Counted draws: {summary['counted']} of {summary['draws']}; median gap closed "
        f"**{fmt(summary['median_gap_closed'])}**, minimum {fmt(summary['min_gap_closed'])}; "
        f"below bicubic pairs: {summary['below_bicubic']}; DSGAN part at most {summary['max_dsgan_minutes']:.1f} min "
        f"a draw; all draws {summary['total_minutes']:.0f} min of run time.",
    ]
    return "\n".join(out)


def run_settings(recipe_json: Path) -> dict:
    """A DSGAN run's effective recipe as ``section.key -> value``, without what differs between runs of one
    setting: the data and output folders and the DSGAN seed."""
    recipe = json.loads(recipe_json.read_text())
    flat = {f"{sec}.{k}": v for sec, keys in recipe.items() for k, v in keys.items()}
    return {k: v for k, v in flat.items() if k not in ("data.hr_dir", "data.lr_dir", "train.output_dir", "train.seed")}


def kept_report(entry: Path) -> dict:
    """A kept results or family JSON given as ``FILE.json:DRAWS``: its runs of those draws, as a run folder's report
    (a family JSON's draws hold lists of runs)."""
    path, _, spec = str(entry).rpartition(":")
    rep = json.loads(Path(path).read_text())
    keep = set(parse_draws(spec, 1000))
    cases = {k: v for k, v in rep["cases"].items() if int(k.removeprefix("draw")) in keep}
    return {**rep, "cases": cases, "carried_from": str(entry)}


def summarize(dirs: list[Path], out: Path, min_gain: float) -> int:
    """Merge the ``results.json`` of family runs (and draws carried from kept JSON files) into OUT/family.json and
    OUT/family.md."""
    reports = [kept_report(d) if ".json:" in str(d) else json.loads((d / "results.json").read_text()) for d in dirs]
    dirs = [d for d in dirs if ".json:" not in str(d)]
    # The same draw in several folders: runs with other DSGAN seeds (--set train.seed=N), pooled per draw. Runs of
    # other settings are not pooled: every DSGAN run's recipe must agree with the first on the keys both have.
    first: dict | None = None
    for path in sorted(p for d in dirs for p in d.glob("*/run/recipe.json")):
        these = run_settings(path)
        first = first or {"path": path, **these}
        differ = sorted(k for k in these.keys() & first.keys() if k != "path" and these[k] != first[k])
        if differ:
            raise SystemExit(f"--summarize: {path} ran {differ[0]} = {these[differ[0]]!r}, {first['path']} {first[differ[0]]!r}")
    cases: dict[str, list[dict]] = {}
    for rep in reports:
        for k, v in rep["cases"].items():
            cases.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    rows = [family_row(k, cases[k], min_gain) for k in sorted(cases)]
    summary = family_summary(rows)
    text = family_table(rows, summary)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: reports[0].get(k) for k in ("recipe", "sets", "family_seed", "sr_steps", "sr_seeds", "machine")}
    (out / "family.json").write_text(
        json.dumps(
            {
                **meta,
                "sources": [str(d) for d in dirs] + [r["carried_from"] for r in reports if "carried_from" in r],
                "source_sets": [rep.get("sets") for rep in reports],
                "rows": rows,
                "summary": summary,
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "family.md").write_text(text + "\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="idphoto", help="built-in recipe name (idphoto, paper) or a recipe TOML file")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override KEY=VALUE (repeatable)")
    ap.add_argument("--cases", default="noise,blur_noise,jpeg,demo", help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--budget-min", type=float, default=5.0, help="DSGAN training time limit per case (minutes)")
    ap.add_argument("--n-train", type=int, default=480, help="HR and real-LR training patches per case")
    ap.add_argument("--hr-size", type=int, default=64, help="training HR patch side (LR is half)")
    ap.add_argument("--n-heldout", type=int, default=32, help="held-out test photos (patches)")
    ap.add_argument("--heldout-size", type=int, default=128, help="held-out HR patch side")
    ap.add_argument("--sr-steps", type=int, default=600)
    ap.add_argument("--sr-batch", type=int, default=16)
    ap.add_argument("--sr-crop", type=int, default=24, help="LR crop side for SR training")
    ap.add_argument("--sr-seeds", default="0,1", help="comma-separated SR training seeds (same DSGAN generator)")
    ap.add_argument("--lpips-alexnet", default=None, help="torchvision AlexNet weights file: adds LPIPS")
    ap.add_argument("--seed", type=int, default=0, help="data and pairs seed")
    ap.add_argument("--out", default="bench_sr_out")
    ap.add_argument("--family", type=int, default=0, help="run N drawn degradations (dsgan_cli.data.family) instead of --cases")
    ap.add_argument("--family-seed", type=int, default=0, help="seed the family is drawn from")
    ap.add_argument("--draws", default=None, help="subset of the family's draws, e.g. 0-5 or 1,4 (default: all)")
    ap.add_argument("--min-oracle-gain", type=float, default=0.2, help="dB the oracle must gain over bicubic for a draw to count")
    ap.add_argument(
        "--reuse",
        nargs="+",
        type=Path,
        default=None,
        help="results.json files of earlier runs with the same data and SR settings: their bicubic and "
        "oracle SR scores are taken, only the DSGAN pairs' SR nets are trained (probes)",
    )
    ap.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        default=None,
        help="merge family runs' output folders (and FILE.json:DRAWS, draws carried from a kept JSON) into --out",
    )
    args = ap.parse_args(argv)
    if args.summarize:
        return summarize(args.summarize, Path(args.out), args.min_oracle_gain)
    args.sr_seeds = [int(s) for s in args.sr_seeds.split(",")]
    # A merged family.json holds each draw's DSGAN runs as a list: their bicubic and oracle scores are the same.
    args.reuse = {
        name: r[0] if isinstance(r, list) else r for f in args.reuse or [] for name, r in json.loads(f.read_text())["cases"].items()
    }
    out = Path(args.out)
    if args.family:
        from dsgan_cli.data.family import sample_family

        family = sample_family(args.family_seed, args.family)
        cases = {family[i].name: family[i] for i in parse_draws(args.draws, args.family)}
    else:
        cases = {name: CASES[name] for name in args.cases.split(",")}
    results, rows = {}, []
    for name, case in cases.items():
        root = out / name
        if root.exists():
            raise SystemExit(f"{root}: exists; choose another --out")
        results[name] = run_case(case, root, args)
        if args.family:
            results[name]["steps"] = case.params()
        rows.append(row(name, results[name]))
        print(rows[-1], flush=True)
        # Written after every case: a long family run that stops keeps what it finished.
        report = {
            "recipe": args.recipe,
            "sets": args.sets,
            "budget_min": args.budget_min,
            "sr_steps": args.sr_steps,
            "family_seed": args.family_seed if args.family else None,
            "sr_seeds": args.sr_seeds,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": " ".join(sys.argv),
            "cases": results,
        }
        (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(rows, bool(args.lpips_alexnet))
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
