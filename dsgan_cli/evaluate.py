"""``dsgan eval``: FID/KID between a fake and a real folder, plus the frequency/noise report.

One pass over each folder decodes every image once and feeds both the
Inception features (FID/KID) and the frequency statistics. The real folder's
results are cached (see :mod:`dsgan_cli.fid`), keyed by its content.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from . import __version__
from .errors import EXIT_ITEMS_FAILED, DsganError, file_error
from .images import DECODERS, ImageReadError, check_output_file, load_rgb, open_regular, require_images

#: Names of the sets in the report.
FAKE, REAL, REFERENCE = "fake", "real", "reference"
DEFAULT_PLOT_NAME = "dsgan_eval_spectrum.png"
PLOT_KIND = "eval-spectrum"


@dataclass
class SetResult:
    """What one pass over a set produced."""

    count: int = 0
    spectrum_sum: np.ndarray | None = None
    noises: list[float] = field(default_factory=list)
    features: list[Any] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    converted: int = 0
    resized: int = 0

    def stats(self) -> dict:
        """Per-set frequency stats in the form :func:`spectrum.summarize` takes."""
        return {"count": self.count, "spectrum": self.spectrum_sum / max(self.count, 1),
                "noise": float(np.mean(self.noises)) if self.noises else float("nan"),
                "noise_std": float(np.std(self.noises)) if self.noises else float("nan")}


def parse_size(text: str | int | tuple | None) -> tuple[int, int] | None:
    """``"128"`` -> (128, 128); ``"128x96"`` -> (128, 96) as (W, H); None stays None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        w, h = text
    elif isinstance(text, int):
        w = h = text
    else:
        parts = str(text).lower().split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise DsganError(f"--size {text!r}: expected N or WxH, e.g. 128 or 128x96") from None
        if len(vals) == 1:
            w = h = vals[0]
        elif len(vals) == 2:
            w, h = vals
        else:
            raise DsganError(f"--size {text!r}: expected N or WxH, e.g. 128 or 128x96")
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise DsganError(f"--size {w}x{h}: each side must be between 8 and 8192 pixels")
    return int(w), int(h)


def _header_size(path: Path) -> tuple[int, int] | None:
    """(W, H) from the file header with EXIF orientation applied; None when unreadable (reported later)."""
    try:
        with open_regular(path) as fh, Image.open(fh, formats=DECODERS) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - the real decode reports the reason
        return None


def choose_size(fake: list[Path], real: list[Path], requested: tuple[int, int] | None) -> tuple[tuple[int, int], bool, dict]:
    """The one analysis size (W, H), whether any fake/real image needs resizing, and the sizes seen per set."""
    seen = {FAKE: Counter(), REAL: Counter()}
    for name, files in ((FAKE, fake), (REAL, real)):
        for p in files:
            s = _header_size(p)
            if s is not None:
                seen[name][s] += 1
    if requested is not None:
        size = requested
    elif seen[REAL]:
        size = seen[REAL].most_common(1)[0][0]
    elif seen[FAKE]:
        size = seen[FAKE].most_common(1)[0][0]
    else:
        raise DsganError("no readable image in the fake or the real folder")
    needs = any(s != size for c in seen.values() for s in c)
    return size, needs, {k: {f"{w}x{h}": n for (w, h), n in c.most_common()} for k, c in seen.items()}


def _load_plain(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool, bool]:
    """(uint8 RGB array at ``size``, converted?, resized?)."""
    img, converted_from = load_rgb(path)
    resized = img.size != size
    if resized:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(img), converted_from is not None, resized


def _load_reference(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, bool, bool]:
    """Bicubic Xb of an HR image: ``models.downscale`` by scale = HR width / analysis width."""
    from .images import image_to_tensor, tensor_to_uint8
    from .models import downscale

    img, converted_from = load_rgb(path)
    scale = img.width / size[0]
    x = downscale(image_to_tensor(img)[None], scale)[0] if abs(scale - 1.0) > 1e-9 else image_to_tensor(img)
    arr = tensor_to_uint8(x)
    resized = (arr.shape[1], arr.shape[0]) != size
    if resized:
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))
    return arr, converted_from is not None, resized


def reference_artefacts(fake_dir: Path, fake_files: list[Path], ref_dir: Path, ref_files: list[Path]) -> dict | None:
    """Colour shift and border ratio of each fake image against the bicubic Xb of its own HR image.

    Pairs are matched by relative path without the extension (what ``degrade`` writes); each Xb is
    made at the fake image's size. These are :mod:`dsgan_cli.paired` figures that need no target:
    a good generator keeps colours (shift ~0 levels) and treats the border like the interior (ratio ~1).
    """
    from .paired import border_energy, colour_shift

    refs = {p.relative_to(ref_dir).with_suffix("").as_posix(): p for p in ref_files}
    shifts, outer, inner, pairs = [], 0.0, 0.0, 0
    for f in fake_files:
        ref = refs.get(f.relative_to(fake_dir).with_suffix("").as_posix())
        if ref is None:
            continue
        try:
            xd = np.asarray(load_rgb(f)[0])
            xb, _, _ = _load_reference(ref, (xd.shape[1], xd.shape[0]))
        except (ImageReadError, OSError):
            continue  # listed as unreadable by the main pass
        xd, xb = xd.astype(np.float64), xb.astype(np.float64)
        shifts.append(colour_shift(xd, xb))
        o, i = border_energy(xd, xb)
        outer, inner, pairs = outer + o, inner + i, pairs + 1
    if not pairs:
        return None
    shift = np.asarray(shifts)
    return {"pairs": pairs, "colour_shift_mean": shift.mean(0).tolist(), "colour_shift_abs": np.abs(shift).mean(0).tolist(),
            "colour_shift_max": float(np.abs(shift).mean(0).max()),
            "border_ratio": float(np.sqrt(outer / inner)) if inner > 0 else None}


def _prepare(item: tuple[Path, str, tuple[int, int]]):
    """Decode one image and compute its spectrum and noise (runs in a worker thread)."""
    from .spectrum import image_stats

    path, kind, size = item
    try:
        arr, converted, resized = (_load_reference if kind == REFERENCE else _load_plain)(path, size)
    except ImageReadError as e:
        return path, None, None, None, False, False, e.reason
    spec, noise = image_stats(arr)
    return path, arr, spec, noise, converted, resized, None


def _batches(files: list[Path], kind: str, size: tuple[int, int], batch_size: int, pool: ThreadPoolExecutor) -> Iterator[list]:
    """Prepared images in batches of ``batch_size``, decoded in parallel threads, in file order."""
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        yield list(pool.map(_prepare, [(p, kind, size) for p in chunk]))


class Reporter:
    """Warnings to stderr (one line each) and into the result."""

    def __init__(self, console):
        self.console = console
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)
        if self.console is not None:
            self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _progress(console, enabled: bool):
    """A rich progress bar (images, images/s, ETA) on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=False)


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies in ``folder`` (or below it)."""
    p, f = path.resolve(), folder.resolve()
    return p == f or f in p.parents


def default_plot_path(json_path: str | Path | None, input_dirs: list[Path], reporter: Reporter | None = None) -> Path:
    """Where the spectrum plot goes when the user named none.

    Next to the JSON report (``NAME_spectrum.png``), else ``dsgan_eval_spectrum.png``
    in the current folder. An existing file there is replaced only when it is an
    earlier plot of this command (PNG text chunk); otherwise a free numbered name
    is used. Never inside an input folder (it would be counted as an image).
    """
    from .plots import is_own_plot

    if json_path not in (None, "-"):
        jp = Path(json_path)
        path = jp.with_name(jp.stem + "_spectrum.png")
    else:
        path = Path.cwd() / DEFAULT_PLOT_NAME
    if any(_inside(path, d) for d in input_dirs):
        path = Path.cwd() / DEFAULT_PLOT_NAME
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
    from .images import write_bytes_atomic

    text = json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n"
    if str(json_path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_bytes_atomic(Path(json_path), text.encode())


def _device():
    """The device Accelerate picks (GPU when present, else CPU)."""
    from accelerate import PartialState

    return PartialState().device


def evaluate(fake_dir, real_dir, *, reference_dir=None, inception_weights=None, fid=True, batch_size=64,
             cache_dir=None, plot_path=None, json_path=None, progress=True, allow_random_inception=False,
             size=None, console=None) -> dict:
    """Compare ``fake_dir`` with ``real_dir``: FID/KID (unless ``fid=False``) and the frequency report.

    ``plot_path=None`` draws no plot (the CLI picks a default path);
    ``json_path`` ("-" for stdout) writes the report; ``size`` (N, "WxH" or
    (W, H)) forces the analysis size. Returns the report dict (keys in the
    README, section "dsgan eval"). Raises :class:`DsganError` for user errors.
    """
    from rich.console import Console

    from . import fid as fidmod
    from . import spectrum

    if console is None:
        console = Console(stderr=True)
    rep = Reporter(console)
    if int(batch_size) < 1:
        raise DsganError(f"--batch-size must be at least 1, got {batch_size}")
    fake_dir, real_dir = Path(fake_dir), Path(real_dir)
    fake_files = require_images(fake_dir, "fake")
    real_files = require_images(real_dir, "real")
    ref_dir = Path(reference_dir) if reference_dir is not None else None
    ref_files = require_images(ref_dir, "reference") if ref_dir is not None else []
    input_dirs = [d for d in (fake_dir, real_dir, ref_dir) if d is not None]
    if plot_path is not None:
        plot_path = Path(plot_path)
        for d in input_dirs:
            if _inside(plot_path, d):
                raise file_error(plot_path, f"plot would be written inside the input folder {d}, where later runs would count it as an image")
        if plot_path.is_dir():
            raise file_error(plot_path, "plot path is a folder; give a file name such as eval_spectrum.png")
    if json_path not in (None, "-") and Path(json_path).is_dir():
        raise file_error(json_path, "--json path is a folder; give a file name such as report.json")
    # Before the work: a report that cannot be written, or would replace a symlink or device, fails now.
    for out, what in ((plot_path, "plot"), (None if json_path in (None, "-") else json_path, "JSON report")):
        if out is not None:
            check_output_file(out, what)
    req = parse_size(size)
    if fid and min(len(fake_files), len(real_files)) < 2:
        raise DsganError(f"FID/KID need at least 2 images per set (fake: {len(fake_files)}, real: {len(real_files)}); "
                         "use --no-fid for the frequency report only")

    weights = fidmod.resolve_weights(inception_weights, allow_random_inception) if fid else None
    if weights is not None and weights.kind == "random":
        rep.warn("Inception-v3 with RANDOM weights (--random-inception, meant for tests): FID/KID say nothing about image quality")

    analysis_size, needs_resize, sizes_seen = choose_size(fake_files, real_files, req)
    if needs_resize:
        rep.warn(f"images are resized (bicubic) to {analysis_size[0]}x{analysis_size[1]} for the comparison; "
                 f"sizes found: fake {sizes_seen[FAKE]}, real {sizes_seen[REAL]}")

    cache_root = Path(cache_dir) if cache_dir is not None else fidmod.default_cache_dir()
    fingerprint = fidmod.folder_fingerprint(real_dir, real_files)
    freq_key = fidmod.cache_key("frequency", fingerprint, size=analysis_size)
    freq_cache = cache_root / f"real-frequency-{freq_key}.safetensors"
    inc_cache = None
    if weights is not None:
        inc_key = fidmod.cache_key("inception", fingerprint, size=analysis_size, extractor=fidmod.EXTRACTOR_NAME,
                                   layer=fidmod.FEATURE_LAYER, weights=weights.identity)
        inc_cache = cache_root / f"real-inception-{inc_key}.safetensors"
    cached_freq = fidmod.cache_load(freq_cache, ("count", "spectrum", "noise", "resized", "converted"))
    cached_inc = fidmod.cache_load(inc_cache, ("features", "mu", "sigma")) if inc_cache is not None else None
    real_from_cache = cached_freq is not None and (weights is None or cached_inc is not None)

    model, device = None, None
    if weights is not None:
        device = _device()
        model = fidmod.build_extractor(weights, device)

    results = {FAKE: SetResult(), REAL: SetResult()}
    plan = [(FAKE, fake_files, model)]
    if real_from_cache:
        r = results[REAL]
        r.count = int(cached_freq["count"][0])
        r.spectrum_sum = cached_freq["spectrum"].astype(np.float64) * r.count
        r.noises = [float(v) for v in cached_freq["noise"]]
        r.resized = int(cached_freq["resized"][0])
        r.converted = int(cached_freq["converted"][0])
        if cached_inc is not None:
            r.features = [cached_inc["features"]]
    else:
        plan.append((REAL, real_files, model))
    if ref_files:
        results[REFERENCE] = SetResult()
        plan.append((REFERENCE, ref_files, None))

    import torch

    total = sum(len(files) for _, files, _ in plan)
    workers = max(1, min(4, os.cpu_count() or 1))
    with _progress(console, progress) as bar, ThreadPoolExecutor(workers) as pool:
        task = bar.add_task("eval", total=total)
        for name, files, net in plan:
            bar.update(task, description=f"{name:>9}")
            res = results[name]
            for batch in _batches(files, name, analysis_size, int(batch_size), pool):
                arrays = []
                for path, arr, spec, noise, converted, resized, error in batch:
                    if error is not None:
                        res.unreadable.append(f"{path}: {error}")
                        continue
                    res.count += 1
                    res.spectrum_sum = spec if res.spectrum_sum is None else res.spectrum_sum + spec
                    res.noises.append(noise)
                    res.converted += bool(converted)
                    res.resized += bool(resized)
                    arrays.append(arr)
                if net is not None and arrays:
                    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
                    res.features.append(fidmod.extract(net, x).numpy())
                bar.advance(task, len(batch))

    for name, res in results.items():
        for line in res.unreadable:
            rep.warn(f"skipped unreadable {name} image {line}")
        if res.count == 0:
            folder = {FAKE: fake_dir, REAL: real_dir, REFERENCE: ref_dir}[name]
            raise DsganError(f"{folder}: no readable image in the {name} folder ({len(res.unreadable)} unreadable)")
        if res.converted:
            rep.warn(f"{res.converted} {name} image(s) converted to 8-bit RGB (grayscale, palette, alpha, 16-bit or CMYK)")
    if ref_files and results[REFERENCE].resized:
        rep.warn(f"{results[REFERENCE].resized} reference Xb image(s) resized to {analysis_size[0]}x{analysis_size[1]} "
                 "after the bicubic downscale (HR aspect ratio or size not a multiple of the analysis size)")

    real = results[REAL]
    if not real_from_cache and not real.unreadable:
        fidmod.cache_save(freq_cache, {"count": np.array([real.count], np.int64), "spectrum": real.stats()["spectrum"],
                                       "noise": np.asarray(real.noises, np.float64),
                                       "resized": np.array([real.resized], np.int64),
                                       "converted": np.array([real.converted], np.int64)})
    fid_value = kid_mean = kid_std = subset = None
    if weights is not None:
        f_fake = np.concatenate(results[FAKE].features)
        f_real = np.concatenate(real.features)
        if len(f_fake) < 2 or len(f_real) < 2:
            raise DsganError(f"FID/KID need at least 2 readable images per set (fake: {len(f_fake)}, real: {len(f_real)})")
        s_fake = fidmod.fid_statistics(torch.from_numpy(f_fake))
        if cached_inc is not None and real_from_cache:
            s_real = {"mu": cached_inc["mu"], "sigma": cached_inc["sigma"]}
        else:
            s_real = fidmod.fid_statistics(torch.from_numpy(f_real))
            if not real.unreadable:
                fidmod.cache_save(inc_cache, {"features": f_real.astype(np.float32), "mu": s_real["mu"], "sigma": s_real["sigma"]})
        fid_value = fidmod.frechet_distance(s_fake, s_real, f_fake, f_real)
        subset = fidmod.kid_subset_size(len(f_fake), len(f_real))
        kid_mean, kid_std = fidmod.kernel_inception_distance(torch.from_numpy(f_fake), torch.from_numpy(f_real), subset)
        smallest = min(len(f_fake), len(f_real))
        if smallest < fidmod.FID_MIN_RECOMMENDED:
            rep.warn(f"small sets (fake: {len(f_fake)}, real: {len(f_real)} images): with fewer than "
                     f"{fidmod.FID_MIN_RECOMMENDED} images per set FID is biased upward and noisy; compare FIDs only at "
                     f"equal image counts and prefer KID (subset size {subset})")

    stats = {name: res.stats() for name, res in results.items()}
    frequency = spectrum.summarize(stats, REAL)
    frequency["image_size"] = list(analysis_size)
    if ref_files:
        frequency["reference_note"] = ("reference = bicubic Xb of the --reference HR images: models.downscale "
                                       "(antialiased bicubic) by scale = HR width / analysis width")

    plot_written = None
    if plot_path is not None:
        from .plots import line_plot

        freqs = frequency["frequencies"]
        labels = {FAKE: "fake", REAL: "real", REFERENCE: "reference Xb (bicubic)"}
        series = {f"{labels[n]} (n={s['count']})": (freqs, s["spectrum"]) for n, s in frequency["sets"].items()}
        line_plot(series, plot_path, title="Radially averaged power spectrum (luminance)", xlabel="spatial frequency (cycles/pixel)",
                  ylabel="power", logy=True, kind=PLOT_KIND)
        plot_written = str(plot_path)

    counts = {FAKE: results[FAKE].count, REAL: real.count, REFERENCE: results[REFERENCE].count if ref_files else None}
    result = {
        "fid": fid_value,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        "counts": counts,
        "unreadable": {name: res.unreadable for name, res in results.items() if res.unreadable},
        "image_size": list(analysis_size),
        "resized": bool(needs_resize or any(r.resized for r in results.values())),
        "resized_counts": {name: res.resized for name, res in results.items()},
        "converted_counts": {name: res.converted for name, res in results.items()},
        "real_stats_cached": real_from_cache,
        "warnings": rep.messages,
        "settings": {
            "fake_dir": str(fake_dir), "real_dir": str(real_dir), "reference_dir": str(ref_dir) if ref_dir else None,
            "fid": weights is not None, "feature_extractor": fidmod.EXTRACTOR_NAME if weights else None,
            "feature_layer": fidmod.FEATURE_LAYER if weights else None,
            "inception_weights": weights.describe() if weights else None,
            "kid_subsets": fidmod.KID_SUBSETS if weights else None,
            "batch_size": int(batch_size), "device": str(device) if device is not None else None,
            "size_requested": list(req) if req else None, "cache_dir": str(cache_root), "dsgan_cli_version": __version__,
        },
        "frequency": frequency,
        "artefacts": reference_artefacts(fake_dir, fake_files, ref_dir, ref_files) if ref_files else None,
        "plot": plot_written,
    }
    result = jsonable(result)
    if json_path is not None:
        write_json(result, json_path)
    return result


def exit_code(result: dict) -> int:
    """0, or 1 when some images could not be read."""
    return EXIT_ITEMS_FAILED if result.get("unreadable") else 0


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
        t.add_row("KID", f"{result['kid_mean']:.6f} ± {result['kid_std']:.6f}", f"subset size {result['kid_subset_size']}, "
                  f"{result['settings']['kid_subsets']} subsets")
        console.print(t)
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
    art = result.get("artefacts")
    if art:
        r, g, b = art["colour_shift_mean"]
        border = "-" if art["border_ratio"] is None else f"{art['border_ratio']:.2f}"
        console.print(f"against each image's reference Xb ({art['pairs']} pairs): colour shift R {r:+.2f} G {g:+.2f} "
                      f"B {b:+.2f} levels; border/interior residual {border} (1.0 = no border artefact)",
                      markup=False, highlight=False)
    if result.get("plot"):
        console.print(f"spectrum plot: {result['plot']}", markup=False, highlight=False)
