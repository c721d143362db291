"""FID pieces on the current machine: our exact trace term vs torch-fidelity's, and the extractor's layout.

    .venv/bin/python scripts/bench_fid.py --json bench_fid.json

1. ``fid.frechet_distance`` (symmetric decompositions, :func:`dsgan_cli.metrics.fid.trace_sqrt_product`) against
   torch-fidelity's ``fid_statistics_to_metric`` (``eigvals`` of a non-symmetric product) on 2048-d
   random features, for set sizes below and above the feature dimension: seconds and the FID of each.
2. The Inception-v3 extractor (random weights: same cost) on a uint8 batch, NCHW vs channels_last:
   seconds per image and the largest feature difference.
Prints a table and the JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchio import emit_json  # noqa: E402  (scripts/ is on sys.path when a script runs)

from dsgan_cli.metrics import fid  # noqa: E402


def timed(fn):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def trace_term(n: int, dim: int = 2048) -> dict:
    """Our FID and torch-fidelity's on two random feature sets of ``n`` images each, with their times."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(n)
    f1 = torch.randn(n, dim, generator=g, dtype=torch.float64)
    f2 = torch.randn(n, dim, generator=g, dtype=torch.float64) * 1.1 + 0.05
    s1, s2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    ours, t_ours = timed(lambda: fid.frechet_distance(s1, s2, f1.numpy(), f2.numpy()))
    theirs, t_theirs = timed(lambda: fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])
    return {
        "images_per_set": n,
        "ours_s": t_ours,
        "torch_fidelity_s": t_theirs,
        "speedup": t_theirs / t_ours,
        "fid_ours": float(ours),
        "fid_torch_fidelity": float(theirs),
    }


def extractor_layouts(batch: int, side: int) -> dict:
    """Seconds per image of the Inception extractor in NCHW and channels_last, and their largest feature difference."""
    model = fid.build_extractor(fid.InceptionWeights("random", None, "random-he-init-seed-0"))  # channels_last on CPU
    x = torch.randint(0, 256, (batch, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = {}
    feats = {}
    for layout in ("channels_last", "contiguous"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        with torch.inference_mode():
            model(x[:1].contiguous(memory_format=fmt))  # warm-up
            feats[layout], t = timed(lambda model=model, fmt=fmt: model(x.contiguous(memory_format=fmt))[0].float())
        out[f"{layout}_s_per_image"] = t / batch
    out["speedup_channels_last"] = out["contiguous_s_per_image"] / out["channels_last_s_per_image"]
    out["max_feature_difference"] = float((feats["channels_last"] - feats["contiguous"]).abs().max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,3000", help="images per set for the trace-term comparison")
    ap.add_argument("--batch", type=int, default=16, help="images per extractor call")
    ap.add_argument("--side", type=int, default=128, help="image side for the extractor (it resizes to 299)")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    report = {
        "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "trace_term": [trace_term(int(n)) for n in args.sizes.split(",")],
        "extractor": {"batch": args.batch, "side": args.side, **extractor_layouts(args.batch, args.side)},
    }
    print(f"{'images/set':>10}{'ours s':>10}{'t-fidelity s':>14}{'speedup':>9}{'FID ours':>14}{'FID t-fidelity':>16}")
    for r in report["trace_term"]:
        print(
            f"{r['images_per_set']:>10}{r['ours_s']:>10.2f}{r['torch_fidelity_s']:>14.2f}{r['speedup']:>9.1f}"
            f"{r['fid_ours']:>14.6f}{r['fid_torch_fidelity']:>16.6f}"
        )
    e = report["extractor"]
    print(
        f"extractor: {e['contiguous_s_per_image']:.3f} s/image NCHW, {e['channels_last_s_per_image']:.3f} s/image "
        f"channels_last ({e['speedup_channels_last']:.2f}x), max feature difference {e['max_feature_difference']:.2g}"
    )
    emit_json(report, args.json)


if __name__ == "__main__":
    main()
