"""The demo's report: the sample grid, loss curves and spectrum plot, the SR pictures, the verdict and its
numbers (``summary.json``), and the tables printed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..plumbing.errors import DsganError
from ..plumbing.jsonl import read_jsonl
from .demo_data import HeldOut, holdout_targets, load_arrays

#: The smallest gain (dB) of SR trained on DSGAN pairs over SR trained on bicubic pairs that counts as learned.
SR_GAIN_MIN_DB = 0.1


def high_pass_view(arr: np.ndarray) -> np.ndarray:
    """High-pass of a uint8 image as shown in the training sample grids."""
    import torch

    from ..data.images import tensor_to_uint8
    from ..engines.trainlog import highpass_view

    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)[None]
    return tensor_to_uint8(highpass_view(t)[0])


def sample_grid(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, zoom: int = 4) -> None:
    """Grid of Xb | Xd | its known target (the same Xb through the real degradation) | their high-passes,
    one held-out photo per row, enlarged without smoothing."""
    from PIL import ImageDraw

    from ..plumbing.writes import save_image_atomic

    titles = ["Xb (bicubic)", "Xd = G(Xb)", "target (real degr.)", "high-pass Xb", "high-pass Xd", "high-pass target"]
    h, w = rows[0][0].shape[:2]
    tile_w, tile_h, pad, head = w * zoom, h * zoom, 4, 18
    canvas = Image.new("RGB", (len(titles) * (tile_w + pad) + pad, head + len(rows) * (tile_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((pad + c * (tile_w + pad) + 2, 3), title, fill=(0, 0, 0))
    for r, (xb, xd, target) in enumerate(rows):
        tiles = [xb, xd, target, high_pass_view(xb), high_pass_view(xd), high_pass_view(target)]
        for c, tile in enumerate(tiles):
            img = Image.fromarray(tile).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            canvas.paste(img, (pad + c * (tile_w + pad), head + pad + r * (tile_h + pad)))
    save_image_atomic(canvas, path)


def sr_picture(
    real_lr: np.ndarray, sr_bicubic: np.ndarray, sr_dsgan: np.ndarray, hr: np.ndarray, scores: dict[str, float], path: Path, zoom: int = 3
) -> None:
    """real LR | SR from bicubic pairs | SR from DSGAN pairs | HR, each titled (with its PSNR), enlarged without smoothing."""
    from PIL import ImageDraw

    from ..plumbing.writes import save_image_atomic

    up = np.asarray(Image.fromarray(real_lr).resize(hr.shape[1::-1], Image.Resampling.NEAREST))
    tiles = [
        ("real LR", up),
        (f"SR, bicubic pairs {scores['bicubic']:.2f} dB", sr_bicubic),
        (f"SR, DSGAN pairs {scores['DSGAN']:.2f} dB", sr_dsgan),
        ("HR", hr),
    ]
    h, w = hr.shape[:2]
    tw, th, pad, head = w * zoom, h * zoom, 4, 18
    canvas = Image.new("RGB", (len(tiles) * (tw + pad) + pad, head + th + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (title, tile) in enumerate(tiles):
        draw.text((pad + c * (tw + pad) + 2, 3), title, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST), (pad + c * (tw + pad), head + pad))
    save_image_atomic(canvas, path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a training ``metrics.jsonl`` (unreadable lines are skipped)."""
    return [rec for rec in read_jsonl(path) if "step" in rec]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average, so noisy GAN losses show their trend."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_plot(records: list[dict[str, Any]], path: Path) -> list[str]:
    """Draw the training losses (smoothed) with ``plots.line_plot``; returns the series drawn."""
    from ..plumbing.plots import line_plot

    keys = ["loss_g", "loss_d", "loss_color", "loss_gan", "loss_perceptual"]
    window = max(1, len(records) // 25)
    series = {}
    for key in keys:
        pts = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float)) and np.isfinite(r[key]) and r[key] > 0]
        if pts:
            xs, ys = zip(*pts)
            series[key] = (list(xs), smooth(list(ys), window))
    if series:
        how = f"moving average over {window} log records" if window > 1 else "as logged"
        line_plot(series, path, title=f"Training losses ({how})", xlabel="step", ylabel="loss", logy=True, kind="demo-losses")
    return list(series)


#: Names of the ``eval`` report's sets in the demo's words.
EVAL_SET_NAMES = {"reference": "Xb", "fake": "Xd", "real": "real LR"}


def frequency_numbers(frequency: dict[str, Any], plot_path: Path) -> dict[str, Any]:
    """Noise level and spectral distance to the real LR per set, from ``eval``'s frequency report; draws the spectra."""
    from ..plumbing.plots import line_plot

    per_set = {EVAL_SET_NAMES[k]: v for k, v in frequency["sets"].items() if k in EVAL_SET_NAMES}
    missing = sorted(set(EVAL_SET_NAMES.values()) - set(per_set))
    if missing:
        raise DsganError(f"eval report lacks the set(s) {', '.join(missing)}")
    order = ["Xb", "Xd", "real LR"]
    freqs = list(frequency["frequencies"])
    series = {f"{name} (n={per_set[name]['count']})": (freqs, list(per_set[name]["spectrum"])) for name in order}
    line_plot(
        series,
        plot_path,
        title="Radially averaged power spectrum: held-out Xb and Xd vs real LR",
        xlabel="spatial frequency (cycles/pixel)",
        ylabel="power",
        logy=True,
        kind="demo-spectrum",
    )
    return {
        "noise": {name: float(per_set[name]["noise"]) for name in order},
        "spectral_distance": {name: float(per_set[name]["spectral_distance"]) for name in order},
        "spectral_distance_high": {name: float(per_set[name]["spectral_distance_high"]) for name in order},
        "high_band": frequency.get("high_band"),
        "image_size": frequency.get("image_size"),
        "definitions": frequency.get("definitions"),
    }


def judge(xbs: list[np.ndarray], xds: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
    """Did G learn the known degradation? Paired figures on the held-out photos against their targets."""
    from ..metrics.paired import TARGETS, paired_report, verdict

    figures = paired_report(xbs, xds, targets, min_flat=32)
    checks = verdict(figures, grain=True, sharpness=False)
    return {"learned": all(checks.values()), "checks": checks, "paired": figures, "targets": TARGETS}


def write_report(
    report_dir: Path, held: HeldOut, train_result: Any, evaluation: dict[str, Any], sr: dict[str, Any], state: dict[str, Any]
) -> dict[str, Any]:
    """Sample grid, loss curves, spectrum plot and the summary numbers; returns the summary."""
    from ..data.images import list_images
    from .eval_report import jsonable

    data_dir, xb_paths, xd_dir, spec = held.data_dir, held.xb_paths, held.xd_dir, held.spec
    xd_by_stem = {p.stem: p for p in list_images(xd_dir)}
    pairs = [(xb, xd_by_stem[xb.stem]) for xb in xb_paths if xb.stem in xd_by_stem]
    if len(pairs) != len(xb_paths):
        raise DsganError(f"{xd_dir}: degrade wrote {len(pairs)} of {len(xb_paths)} held-out images")
    real_paths = list_images(data_dir / "lr_real")
    xb_list, xd_list = [p[0] for p in pairs], [p[1] for p in pairs]

    n_rows = min(6, len(pairs))
    targets = holdout_targets(xb_list, spec)
    rows = list(zip(load_arrays(xb_list[:n_rows]), load_arrays(xd_list[:n_rows]), targets[:n_rows]))
    sample_grid(rows, report_dir / "samples.png")

    records = read_metrics(Path(train_result.output_dir) / "logs" / "metrics.jsonl")
    drawn = loss_plot(records, report_dir / "losses.png")
    if not drawn:
        raise DsganError(f"{train_result.output_dir}: training logged no losses (logs/metrics.jsonl)")

    result = evaluation["result"]
    freq = frequency_numbers(result["frequency"], report_dir / "spectrum.png")
    verdict = judge(load_arrays(xb_list), load_arrays(xd_list), targets)
    summary = {
        "ok": True,
        "mode": state["mode"],
        # The point of the tool: SR trained on DSGAN pairs does better on real LR than SR trained on bicubic pairs.
        "learned": sr["gain_db"] >= SR_GAIN_MIN_DB,
        "sr": sr,
        "verdict": {
            "checks": verdict["checks"],
            "targets": verdict["targets"],
            "note": "diagnostics of Xd against its known target; the verdict is the SR result (learned)",
        },
        "paired": verdict["paired"],
        "noise": freq["noise"],
        "spectral_distance": freq["spectral_distance"],
        "spectral_distance_high": freq["spectral_distance_high"],
        "spectral_distance_reference": "real LR",
        "high_band": freq["high_band"],
        "analysis_image_size": freq["image_size"],
        "definitions": freq["definitions"],
        "fid": result["fid"],
        "kid": result["kid_mean"],
        "fid_note": evaluation["fid_note"],
        "perceptual_weights": state["perceptual_weights"],
        "perceptual_note": state["perceptual_note"],
        "degradation": state["data"]["degradation"],
        "counts": {"train_hr": state["data"]["counts"]["hr"], "real_lr": len(real_paths), "held_out": len(pairs)},
        "train": {
            "steps": train_result.steps,
            "generator": str(train_result.generator_path),
            "last_losses": jsonable(train_result.last_losses),
        },
        "recipe_file": state["recipe_file"],
        "overrides": state["overrides"],
        "files": {
            **{name: str(report_dir / name) for name in ("samples.png", "losses.png", "spectrum.png", "summary.json", "eval.json")},
            "sr_pictures": sr["folder"],
        },
    }
    return summary


def print_summary(summary: dict[str, Any], report_dir: Path, console) -> None:
    """The rich table a newcomer reads: noise and spectral distance of Xb, Xd and real LR, then the verdict."""
    from rich.table import Table

    table = Table(title="Whole-image statistics (held-out photos; informative, not the verdict)")
    table.add_column("set")
    table.add_column("estimated noise (0-255)", justify="right")
    table.add_column("spectral distance to real LR", justify="right")
    table.add_column("same, high band only", justify="right")
    labels = {"Xb": "Xb  bicubic input", "Xd": "Xd  G(Xb), learned", "real LR": "real LR  (target)"}
    for key, label in labels.items():
        table.add_row(
            label,
            f"{summary['noise'][key]:.2f}",
            f"{summary['spectral_distance'][key]:.3f}",
            f"{summary['spectral_distance_high'][key]:.3f}",
        )
    console.print(table)
    if summary.get("fid") is not None:
        console.print(f"FID(Xd, real LR) = {summary['fid']:.2f}  ({summary['fid_note']})")
    else:
        console.print("FID: skipped (no Inception-v3 weights offline); the numbers above need no pretrained network.")
    p, t = summary["paired"], summary["verdict"]["targets"]
    paired = Table(title="Held-out photos vs their known target (same Xb through the real degradation)")
    for col in ("figure", "Xd", "target", "needed"):
        paired.add_column(col, justify="left" if col == "figure" else "right")
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    paired.add_row(
        "grain in flat regions (std, 0-255)", fmt(p["grain_xd"]), fmt(p["grain_target"]), f">= {t['grain_ratio_min']:.0%} of target"
    )
    paired.add_row(
        "colour shift, worst channel (levels)",
        fmt(p["colour_shift_max"]),
        fmt(max(p["colour_shift_target"])),
        f"<= {t['colour_shift_max']}",
    )
    paired.add_row("border / interior residual", fmt(p["border_ratio_xd"]), fmt(p["border_ratio_target"]), f"<= {t['border_ratio_max']}")
    paired.add_row("residual spectrum distance (Xb = 1)", fmt(p["spectrum_distance_xd"]), "0.00", f"<= {t['spectrum_vs_xb_max']}")
    console.print(paired)
    sr = summary["sr"]
    n = len(sr["photos"])
    console.print(
        f"SR net on held-out real-LR photos: trained on bicubic pairs {sr['psnr_sr_bicubic_pairs']:.2f} dB, "
        f"on DSGAN pairs {sr['psnr_sr_dsgan_pairs']:.2f} dB ({sr['gain_db']:+.2f} dB; better on "
        f"{sr['photos_improved']} of {n} photos)"
    )
    if summary["learned"]:
        console.print(
            f"[bold green]Learned:[/] SR trained on DSGAN pairs restores held-out real-LR photos "
            f"{sr['gain_db']:.2f} dB better than SR trained on bicubic pairs."
        )
    else:
        console.print(
            f"[bold red]NOT learned:[/] SR trained on DSGAN pairs gains {sr['gain_db']:+.2f} dB over bicubic pairs "
            f"(needed: {sr['gain_min_db']:+.2f}). Train longer (--set train.iterations=...) or look at the samples."
        )
    console.print(f"report: {report_dir}/  samples.png  sr/  losses.png  spectrum.png  summary.json")
