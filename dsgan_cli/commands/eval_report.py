"""The report of ``dsgan eval``: the report dict (keys in docs/eval.md) built from the measurements, its JSON and
spectrum plot, the warnings it carries, and the tables printed from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..data.sets import ImageSet
from ..plumbing.errors import write_stdout

#: Names of the sets in the report.
FAKE, REAL, REFERENCE = "fake", "real", "reference"
PLOT_KIND = "eval-spectrum"


class Reporter:
    """Warnings to stderr (one line each) and into the result."""

    def __init__(self, console):
        self.console = console
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)
        if self.console is not None:
            self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies in ``folder`` (or below it)."""
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def default_plot_path(json_path: str | Path | None, input_dirs: list[Path], reporter: Reporter | None = None) -> Path | None:
    """Where the spectrum plot goes when the user named none: next to the JSON report (``NAME_spectrum.png``),
    or nowhere (None) without a report file; never silently into the current folder.

    An existing file there is replaced only when it is an earlier plot of this command (PNG text chunk);
    otherwise a free numbered name is used. Never inside an input folder (it would be counted as an image):
    then no plot, with a warning.
    """
    from ..plumbing.plots import is_own_plot

    if json_path in (None, "-"):
        return None
    jp = Path(json_path)
    path = jp.with_name(jp.stem + "_spectrum.png")
    if any(inside(path, d) for d in input_dirs):
        if reporter is not None:
            reporter.warn(f"{path} would lie inside an input folder; no plot (name one with --plot)")
        return None
    base, n = path, 1
    while path.exists() and not (path.is_file() and not path.is_symlink() and is_own_plot(path)):
        path = base.with_name(f"{base.stem}-{n}{base.suffix}")
        n += 1
    if path != base and reporter is not None:
        reporter.warn(f"{base} exists and is not an earlier eval plot; writing the plot to {path} instead")
    return path


def jsonable(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers, paths -> strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(result: dict, json_path: str | Path) -> None:
    """Write the report as JSON to ``json_path`` atomically, or to stdout for ``-``."""
    from ..plumbing.writes import write_bytes_atomic

    text = json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n"
    if str(json_path) == "-":
        write_stdout(text)
    else:
        write_bytes_atomic(Path(json_path), text.encode())


def reference_artefacts(fake: ImageSet, fake_dir: Path, ref: ImageSet, ref_dir: Path) -> dict | None:
    """Colour shift and border ratio of each fake image against the bicubic Xb of its own HR image.

    Pairs are matched by relative path without the extension (what ``degrade`` writes) and compared
    at the analysis size. These are :mod:`dsgan_cli.metrics.paired` figures that need no target: a good
    generator keeps colours (shift ~0 levels) and treats the border like the interior (ratio ~1).
    """
    from ..metrics.paired import border_energy, colour_shift

    refs = {p.relative_to(ref_dir).with_suffix("").as_posix(): i for i, p in enumerate(ref.paths)}
    shifts, outer, inner, pairs = [], 0.0, 0.0, 0
    for i, f in enumerate(fake.paths):
        j = refs.get(f.relative_to(fake_dir).with_suffix("").as_posix())
        if j is None:
            continue
        xd = fake.images[i].permute(1, 2, 0).numpy().astype(np.float64)
        xb = ref.images[j].permute(1, 2, 0).numpy().astype(np.float64)
        shifts.append(colour_shift(xd, xb))
        o, i_ = border_energy(xd, xb)
        outer, inner, pairs = outer + o, inner + i_, pairs + 1
    if not pairs:
        return None
    shift = np.asarray(shifts)
    return {
        "pairs": pairs,
        "colour_shift_mean": shift.mean(0).tolist(),
        "colour_shift_abs": np.abs(shift).mean(0).tolist(),
        "colour_shift_max": float(np.abs(shift).mean(0).max()),
        "border_ratio": float(np.sqrt(outer / inner)) if inner > 0 else None,
    }


def frequency_section(stats: dict[str, dict], size: tuple[int, int]) -> dict:
    """The frequency report (spectra, noise, spectral distances to the real set) from the per-set statistics."""
    from ..metrics import spectrum

    per_set = {}
    for name, s in stats.items():
        f = s["frequency"]
        per_set[name] = {
            "count": int(f["count"][0]),
            "spectrum": f["spectrum"],
            "noise": float(f["noise"][0]),
            "noise_std": float(f["noise_std"][0]),
        }
    frequency = spectrum.summarize(per_set, REAL)
    frequency["image_size"] = list(size)
    if REFERENCE in stats:
        frequency["reference_note"] = (
            "reference = bicubic Xb of the --reference HR images: models.downscale "
            "(antialiased bicubic) by scale = HR width / analysis width"
        )
    return frequency


def structure_section(stats: dict[str, dict]) -> dict:
    """The structure report (autocorrelation, channel correlation, 2-D spectrum; distances to the real set)."""
    from ..metrics import structure

    return structure.summarize({name: s["structure"] for name, s in stats.items()}, REAL)


def draw_plot(frequency: dict, stats: dict[str, dict], plot_path: Path) -> str:
    """The radial spectra of every set as a log-scale line plot, over each set's 2-D spectrum (log10) and
    autocorrelation map, so that shape and orientation compare as well as level; returns its path."""
    from ..plumbing.plots import lines_and_maps_png
    from ..plumbing.writes import write_bytes_atomic

    freqs = frequency["frequencies"]
    labels = {FAKE: "fake", REAL: "real", REFERENCE: "reference Xb (bicubic)"}
    series = {f"{labels[n]} (n={s['count']})": (freqs, s["spectrum"]) for n, s in frequency["sets"].items()}
    names = list(frequency["sets"])
    maps = {
        "2-D spectrum, log10": [(labels[n], np.log10(np.maximum(stats[n]["structure"]["spectrum_2d"], 1e-12))) for n in names],
        "autocorrelation": [(labels[n], stats[n]["structure"]["autocorrelation"]) for n in names],
    }
    write_bytes_atomic(
        plot_path,
        lines_and_maps_png(
            series,
            maps,
            title="Radially averaged power spectrum (luminance)",
            xlabel="spatial frequency (cycles/pixel)",
            ylabel="power",
            logy=True,
            kind=PLOT_KIND,
        ),
    )
    return str(plot_path)


def build_report(dirs: dict[str, Path], decoded: dict, metrics: dict, frequency: dict, run: dict, rep: Reporter) -> dict:
    """The report dict (keys in docs/eval.md), JSON-safe, of the sets in ``dirs`` (by name)."""
    from ..metrics import fid as fidmod
    from ..metrics.set_stats import extractor_device

    size, weights = run["size"], run["weights"]
    meta = {name: m for name, (_, m) in decoded.items()}
    counts = {
        FAKE: len(decoded[FAKE][0].paths),
        REAL: len(decoded[REAL][0].paths),
        REFERENCE: len(decoded[REFERENCE][0].paths) if REFERENCE in decoded else None,
    }
    ref_dir = dirs.get(REFERENCE)
    return jsonable(
        {
            **metrics,
            "counts": counts,
            "unreadable": run["unreadable"],
            "image_size": list(size),
            "resized": bool(run["needs_resize"] or any(m.get("resized") for m in meta.values())),
            "resized_counts": {name: m.get("resized", 0) for name, m in meta.items()},
            "converted_counts": {name: m.get("converted", 0) for name, m in meta.items()},
            "real_stats_cached": run["cached"][REAL],
            "warnings": rep.messages,
            "settings": {
                "fake_dir": str(dirs[FAKE]),
                "real_dir": str(dirs[REAL]),
                "reference_dir": str(ref_dir) if ref_dir else None,
                "fid": weights is not None,
                "feature_extractor": fidmod.EXTRACTOR_NAME if weights else None,
                "feature_layer": fidmod.FEATURE_LAYER if weights else None,
                "inception_weights": weights.describe() if weights else None,
                "kid_subsets": fidmod.KID_SUBSETS if weights else None,
                "batch_size": run["batch_size"],
                "device": str(extractor_device()) if weights is not None else None,
                "size_requested": list(run["requested"]) if run["requested"] else None,
                "cache_dir": str(run["cache_dir"]),
                "data_cache_dir": run["data_cache_dir"],
                "dsgan_cli_version": __version__,
            },
            "frequency": frequency,
            "structure": run["structure"],
            "artefacts": reference_artefacts(decoded[FAKE][0], dirs[FAKE], decoded[REFERENCE][0], ref_dir) if ref_dir else None,
            "plot": run["plot"],
        }
    )


def verdict_line(result: dict) -> str:
    """What the FID means, in one line."""
    floor, xb, part, eq = (result.get("floor"), result.get("reference_xb"), result.get("closes"), result.get("equal_sizes"))
    if part is not None:
        return (
            f"Xd closes {100 * part:.0f}% of the way from Xb to the real floor (at {eq['sizes'][0]} vs "
            f"{eq['sizes'][1]} images: Xb FID {eq['xb_fid']:.2f}, Xd {eq['fake_fid']:.2f}, floor {floor['fid']:.2f})"
        )
    if eq and eq.get("no_verdict"):
        return f"no verdict: {eq['no_verdict']}"
    if xb and floor:
        return f"Xb is already at the real floor (FID {eq['xb_fid']:.2f} vs {floor['fid']:.2f} at equal sizes): FID cannot rank Xd here"
    if floor:
        return (
            f"FID {result['fid']:.2f} against a real floor of {floor['fid']:.2f} (two halves of the real set); "
            "give --reference HR for the Xb baseline"
        )
    return "too few real images (under 4) for the real floor: FID has no scale here"


def structure_table(structure: dict, console) -> None:
    """The structure of each set's fine detail (shape, not level) and how far it lies from the real set's."""
    from rich.table import Table

    t = Table(title="Structure of the fine detail (high-pass x - box5(x))")
    for col in (
        "set",
        "lag-1 corr. h / v",
        "channel corr.",
        "anisotropy / orientation",
        "distance to real: autocorr. / channels / 2-D spectrum",
    ):
        t.add_column(col, justify="left" if col == "set" else "right")
    for name, s in structure["sets"].items():
        d = s["distance"]
        t.add_row(
            "reference Xb" if name == REFERENCE else name,
            f"{s['lag1_horizontal']:.2f} / {s['lag1_vertical']:.2f}",
            f"{s['mean_channel_correlation']:.2f}",
            f"{s['anisotropy']:.2f} / {s['orientation_deg']:.0f} deg",
            "-" if d is None else f"{d['autocorrelation']:.3f} / {d['channel_correlation']:.3f} / {d['spectrum_2d']:.3f}",
        )
    console.print(t)


def print_report(result: dict, console) -> None:
    """The rich table: FID/KID, then noise level and spectral distance per set."""
    from rich.table import Table

    w, h = result["image_size"]
    if result["fid"] is not None:
        t = Table(title=f"FID / KID  (Inception-v3, {w}x{h} images{', resized' if result['resized'] else ''})")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_column("note")
        cached = " (real stats from cache)" if result["real_stats_cached"] else ""
        t.add_row("FID", f"{result['fid']:.4f}", f"fake {result['counts']['fake']} vs real {result['counts']['real']} images{cached}")
        t.add_row(
            "KID",
            f"{result['kid_mean']:.6f} ± {result['kid_std']:.6f}",
            f"subset size {result['kid_subset_size']}, {result['settings']['kid_subsets']} subsets",
        )
        floor, xb = result.get("floor"), result.get("reference_xb")
        if floor:
            t.add_row(
                "FID real floor",
                f"{floor['fid']:.4f}",
                f"two random halves of the real set ({floor['halves'][0]} vs "
                f"{floor['halves'][1]}): the best any fake set can do; KID {floor['kid_mean']:.6f}",
            )
        if xb:
            t.add_row(
                "FID Xb",
                f"{xb['fid']:.4f}",
                f"bicubic of the reference ({xb['sizes'][0]} images) vs real "
                f"({xb['sizes'][1]}): what Xd must beat; KID {xb['kid_mean']:.6f}",
            )
        console.print(t)
        console.print(verdict_line(result), markup=False, highlight=False)
    freq = result["frequency"]
    t = Table(title="Frequency report (no pretrained network)")
    t.add_column("set")
    t.add_column("images", justify="right")
    t.add_column("noise sigma (0-255)", justify="right")
    t.add_column("spectral distance to real", justify="right")
    t.add_column(f"high band (f >= {freq['high_band']})", justify="right")
    for name, s in freq["sets"].items():
        label = "reference Xb" if name == REFERENCE else name
        d, dh = s["spectral_distance"], s["spectral_distance_high"]
        t.add_row(label, str(s["count"]), f"{s['noise']:.2f}", "-" if d is None else f"{d:.4f}", "-" if dh is None else f"{dh:.4f}")
    console.print(t)
    structure_table(result["structure"], console)
    art = result.get("artefacts")
    if art:
        r, g, b = art["colour_shift_mean"]
        border = "-" if art["border_ratio"] is None else f"{art['border_ratio']:.2f}"
        console.print(
            f"against each image's reference Xb ({art['pairs']} pairs): colour shift R {r:+.2f} G {g:+.2f} "
            f"B {b:+.2f} levels; border/interior residual {border} (1.0 = no border artefact)",
            markup=False,
            highlight=False,
        )
    if result.get("plot"):
        console.print(f"spectrum plot: {result['plot']}", markup=False, highlight=False)
    else:
        console.print(
            "no spectrum plot: name one with --plot PATH, or give --json PATH to get one beside the report", markup=False, highlight=False
        )
