"""``dsgan eval``: FID/KID between a fake and a real folder, plus the frequency/noise report.

The steps: collect the sets -> decode each set once into the memory-mapped uint8
cache that ``train`` uses (:mod:`dsgan_cli.data.datacache`; a later run with unchanged
files maps it instead of decoding) -> per-set frequency statistics and Inception
features, cached by the decoded set's content key -> FID/KID -> frequency report
-> the report dict.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .. import __version__
from ..plumbing import writes
from ..data.sets import ImageSet
from ..plumbing.errors import EXIT_ITEMS_FAILED, DsganError, file_error, write_stdout
from ..data.images import ImageReadError, image_size, load_rgb, require_images
from ..plumbing.reads import file_kind
from ..plumbing.writes import check_output_file
from ..plumbing.progress import progress_bar

#: Names of the sets in the report.
FAKE, REAL, REFERENCE = "fake", "real", "reference"
PLOT_KIND = "eval-spectrum"


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
        return image_size(path)
    except (ImageReadError, OSError):  # the real decode reports the reason
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
    from ..data.images import image_to_tensor, tensor_to_uint8
    from ..method.models import downscale

    img, converted_from = load_rgb(path)
    scale = img.width / size[0]
    x = downscale(image_to_tensor(img)[None], scale)[0] if abs(scale - 1.0) > 1e-9 else image_to_tensor(img)
    arr = tensor_to_uint8(x)
    resized = (arr.shape[1], arr.shape[0]) != size
    if resized:
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))
    return arr, converted_from is not None, resized


def _decoder(kind: str, size: tuple[int, int]):
    """The one decode of a set's files for the cache: plain images at ``size``, reference HR images as their Xb."""
    load = _load_reference if kind == REFERENCE else _load_plain

    def decode(path: Path):
        try:
            arr, converted, resized = load(path, size)
        except ImageReadError as e:
            return None, e.reason, {}
        return arr, None, {"resized": resized, "converted": converted}

    return decode


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
    return {"pairs": pairs, "colour_shift_mean": shift.mean(0).tolist(), "colour_shift_abs": np.abs(shift).mean(0).tolist(),
            "colour_shift_max": float(np.abs(shift).mean(0).max()),
            "border_ratio": float(np.sqrt(outer / inner)) if inner > 0 else None}


class Reporter:
    """Warnings to stderr (one line each) and into the result."""

    def __init__(self, console):
        self.console = console
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        self.messages.append(message)
        if self.console is not None:
            self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _inside(path: Path, folder: Path) -> bool:
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
    if any(_inside(path, d) for d in input_dirs):
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


def _device():
    """The device Accelerate picks (GPU when present, else CPU)."""
    from accelerate import PartialState

    return PartialState().device


@dataclass
class Inputs:
    """The sets of one run: folder and image files per set name (fake, real and, with --reference, reference)."""

    dirs: dict[str, Path]
    files: dict[str, list[Path]]


def collect_sets(fake_dir, real_dir, reference_dir, *, fid: bool, batch_size: int, plot_path, json_path) -> Inputs:
    """List the sets and check every argument and output path before any work (one-line errors)."""
    if int(batch_size) < 1:
        raise DsganError(f"--batch-size must be at least 1, got {batch_size}")
    dirs = {FAKE: Path(fake_dir), REAL: Path(real_dir)}
    if reference_dir is not None:
        dirs[REFERENCE] = Path(reference_dir)
    files = {name: require_images(folder, name) for name, folder in dirs.items()}
    if plot_path is not None:
        plot_path = Path(plot_path)
        if plot_path.is_dir():
            raise file_error(plot_path, "plot path is a folder; give a file name such as eval_spectrum.png")
    # Nothing eval writes may land inside a set it reads: it could replace an input or be counted as one later.
    for out, what in ((plot_path, "plot"), (None if json_path in (None, "-") else Path(json_path), "JSON report")):
        for d in dirs.values():
            if out is not None and _inside(out, d):
                raise file_error(out, f"the {what} would be written inside the input folder {d}; choose a path outside the sets")
    if json_path not in (None, "-") and Path(json_path).is_dir():
        raise file_error(json_path, "--json path is a folder; give a file name such as report.json")
    # Before the work: a report that cannot be written, or would replace a symlink or device, fails now.
    for out, what in ((plot_path, "plot"), (None if json_path in (None, "-") else json_path, "JSON report")):
        if out is not None:
            check_output_file(out, what)
    if fid and min(len(files[FAKE]), len(files[REAL])) < 2:
        raise DsganError(f"FID/KID need at least 2 images per set (fake: {len(files[FAKE])}, real: {len(files[REAL])}); "
                         "use --no-fid for the frequency report only")
    return Inputs(dirs, files)


@contextmanager
def data_cache(cache_dir: str | Path | None) -> Iterator[Path]:
    """The decoded-image cache folder: the one given, train's default, or for "none" a temporary one removed afterwards."""
    from ..data.datacache import default_cache_dir

    if str(cache_dir) != "none":
        yield Path(cache_dir) if cache_dir not in (None, "") else default_cache_dir()
        return
    with writes.temporary_folder("dsgan-eval-") as tmp:
        yield tmp


def decode_sets(inputs: Inputs, size: tuple[int, int], cache_dir: Path, bar) -> dict[str, tuple[ImageSet, dict]]:
    """Every set decoded once into the memory-mapped uint8 cache (see :mod:`dsgan_cli.data.datacache`); a later run maps it."""
    from ..data.datacache import cached_decode

    workers = max(1, min(4, os.cpu_count() or 1))
    out = {}
    for name, folder in inputs.dirs.items():
        def start(total: int, name=name):
            task = bar.add_task(f"decode {name:>9}", total=total)
            return lambda n: bar.advance(task, n)

        out[name] = cached_decode(folder, size, what=name, variant="eval-xb" if name == REFERENCE else "eval",
                                  decode=_decoder(name, size), cache_dir=cache_dir, workers=workers, progress=start)
    return out


def _stats_keys(data_key: str, weights) -> dict[str, str]:
    """Statistics cache keys of one decoded set (frequency; Inception with ``weights``)."""
    from ..metrics import fid as fidmod

    keys = {"frequency": fidmod.cache_key("frequency", data_key), "structure": fidmod.cache_key("structure", data_key)}
    if weights is not None:
        keys["inception"] = fidmod.cache_key("inception", data_key, extractor=fidmod.EXTRACTOR_NAME,
                                             layer=fidmod.FEATURE_LAYER, weights=weights.identity)
    return keys


def _compute_stats(images, kinds: set[str], model, batch_size: int, advance) -> dict[str, dict[str, np.ndarray]]:
    """Frequency statistics and (with ``model``) Inception features, mean and covariance of one decoded set."""
    import torch

    from ..metrics import fid as fidmod
    from ..metrics import spectrum, structure

    out = {}
    if "frequency" in kinds:
        s = spectrum.set_stats(img.permute(1, 2, 0).numpy() for img in images)
        out["frequency"] = {"count": np.array([s["count"]], np.int64), "spectrum": s["spectrum"],
                            "noise": np.array([s["noise"]]), "noise_std": np.array([s["noise_std"]])}
    if "structure" in kinds:
        out["structure"] = structure.set_structure(img.permute(1, 2, 0).numpy().astype(np.float64) for img in images)
    if "inception" in kinds:
        feats = []
        for i in range(0, len(images), batch_size):
            feats.append(fidmod.extract(model, images[i:i + batch_size]).numpy())
            advance(len(images[i:i + batch_size]))
        f = np.concatenate(feats).astype(np.float32)
        out["inception"] = {"features": f, **fidmod.fid_statistics(torch.from_numpy(f))}
    return out


def set_statistics(decoded: dict, weights, cache_dir: Path, batch_size: int, bar) -> tuple[dict[str, dict], dict[str, bool]]:
    """Per-set statistics from the cache, else computed once and cached; (stats, cached)."""
    from ..metrics import fid as fidmod

    keys = {name: _stats_keys(meta["key"], weights) for name, (_, meta) in decoded.items()}
    # Looked up before anything is computed, so "cached" means an entry from an earlier run.
    # An entry with missing, misshapen or non-finite arrays is recomputed, never used.
    found = {name: {kind: fidmod.cache_load(cache_dir / f"{kind}-{key}.safetensors",
                                            fidmod.statistics_shapes(kind, len(decoded[name][0].images)))
                    for kind, key in ks.items()}
             for name, ks in keys.items()}
    model = None
    if weights is not None and any(v is None for ks in found.values() for v in ks.values()):
        model = fidmod.build_extractor(weights, _device())
    stats, cached, done = {}, {}, {}
    for name, (image_set, _) in decoded.items():
        cached[name] = all(v is not None for v in found[name].values())
        todo = {kind for kind, v in found[name].items() if v is None and keys[name][kind] not in done}
        task = bar.add_task(f"features {name:>7}", total=len(image_set.images)) if "inception" in todo else None
        fresh = _compute_stats(image_set.images, todo, model, batch_size, lambda n, task=task: bar.advance(task, n))
        for kind, arrays in fresh.items():
            done[keys[name][kind]] = arrays
            fidmod.cache_save(cache_dir / f"{kind}-{keys[name][kind]}.safetensors", arrays)
        stats[name] = {kind: found[name][kind] if found[name][kind] is not None else done[key] for kind, key in keys[name].items()}
    return stats, cached


#: Seed of the split of the real set into two halves (the floor): the same split on every run.
FLOOR_SEED = 0


def fid_between(a: dict, b: dict) -> float:
    """FID between two sets given as {features, mu, sigma}."""
    from ..metrics import fid as fidmod

    return fidmod.frechet_distance(a, b, a["features"], b["features"])


def fid_kid_between(a: dict, b: dict) -> dict:
    """FID and KID between two sets given as {features, mu, sigma}."""
    import torch

    from ..metrics import fid as fidmod

    subset = fidmod.kid_subset_size(len(a["features"]), len(b["features"]))
    kid_mean, kid_std = fidmod.kernel_inception_distance(torch.from_numpy(a["features"]), torch.from_numpy(b["features"]), subset)
    return {"fid": fid_between(a, b), "kid_mean": kid_mean, "kid_std": kid_std, "kid_subset_size": subset}


def feature_set(features: np.ndarray) -> dict:
    """{features, mu, sigma} of a feature array."""
    import torch

    from ..metrics import fid as fidmod

    return {"features": features, **fidmod.fid_statistics(torch.from_numpy(features))}


def seeded_subset(features: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``features`` chosen by a seeded permutation (all of them when there are fewer)."""
    return features[np.sort(np.random.default_rng(seed).permutation(len(features))[:n])]


def real_halves(real: dict, seed: int = FLOOR_SEED) -> tuple[dict, dict] | None:
    """The real set split into two seeded random halves (None below 4 images)."""
    f = real["features"]
    if len(f) < 4:
        return None
    order = np.random.default_rng(seed).permutation(len(f))
    return feature_set(f[np.sort(order[: len(f) // 2])]), feature_set(f[np.sort(order[len(f) // 2:])])


def closes(fid_fake: float, fid_xb: float | None, fid_floor: float | None) -> float | None:
    """Fraction of the way from Xb's FID to the real floor that the fake set's FID covers (1 = at the floor)."""
    if fid_xb is None or fid_floor is None or fid_xb <= fid_floor:
        return None
    return (fid_xb - fid_fake) / (fid_xb - fid_floor)


def verdict_at_equal_sizes(fake: dict, xb: dict, halves: tuple[dict, dict], floor_fid: float) -> dict:
    """The fake set's and Xb's FID against the second real half, each with as many images as the first half:
    FID grows as sets shrink, so the floor (half against half) is compared with numbers of the same sizes.

    A set smaller than the half gives no verdict (``no_verdict`` says why): its FID would be measured on fewer
    images than the floor's and read as worse than it is. ``sizes`` are the counts actually used: each of the
    fake set and Xb, and the real half they are compared with."""
    a, b = halves
    n = len(a["features"])
    short = [f"{name} has {len(s['features'])}" for name, s in (("the fake set", fake), ("the reference Xb", xb))
             if len(s["features"]) < n]
    if short:
        return {"fake_fid": None, "xb_fid": None, "floor_fid": floor_fid, "sizes": None, "closes": None,
                "no_verdict": f"{' and '.join(short)} images, fewer than the {n} of the real half the floor is "
                              "measured on; FID is compared only at equal sizes"}
    f = fid_between(feature_set(seeded_subset(fake["features"], n, FLOOR_SEED + 1)), b)
    x = fid_between(feature_set(seeded_subset(xb["features"], n, FLOOR_SEED + 1)), b)
    return {"fake_fid": f, "xb_fid": x, "floor_fid": floor_fid, "sizes": [n, len(b["features"])],
            "closes": closes(f, x, floor_fid)}


def fid_kid(stats: dict[str, dict], rep: Reporter) -> dict:
    """FID and KID of the fake against the real set; the real floor (two halves); with a reference, those of
    its Xb against the real set; and how far the fake set closes the way from Xb to the floor."""
    from ..metrics import fid as fidmod

    fake, real = stats[FAKE]["inception"], stats[REAL]["inception"]
    n_fake, n_real = len(fake["features"]), len(real["features"])
    if n_fake < 2 or n_real < 2:
        raise DsganError(f"FID/KID need at least 2 readable images per set (fake: {n_fake}, real: {n_real})")
    out = fid_kid_between(fake, real)
    if min(n_fake, n_real) < fidmod.FID_MIN_RECOMMENDED:
        rep.warn(f"small sets (fake: {n_fake}, real: {n_real} images): with fewer than "
                 f"{fidmod.FID_MIN_RECOMMENDED} images per set FID is biased upward and noisy; compare FIDs only at "
                 f"equal image counts and prefer KID (subset size {out['kid_subset_size']})")
    halves = real_halves(real)
    floor = None
    if halves is not None:
        floor = {**fid_kid_between(*halves), "halves": [len(h["features"]) for h in halves], "seed": FLOOR_SEED}
    ref = stats.get(REFERENCE, {}).get("inception")
    xb = fid_kid_between(ref, real) if ref is not None and len(ref["features"]) >= 2 else None
    if xb is not None:
        xb["sizes"] = [len(ref["features"]), n_real]
    equal = verdict_at_equal_sizes(fake, ref, halves, floor["fid"]) if floor is not None and xb is not None else None
    return {**out, "floor": floor, "reference_xb": xb, "equal_sizes": equal, "closes": equal and equal["closes"]}


def frequency_section(stats: dict[str, dict], size: tuple[int, int]) -> dict:
    """The frequency report (spectra, noise, spectral distances to the real set) from the per-set statistics."""
    from ..metrics import spectrum

    per_set = {}
    for name, s in stats.items():
        f = s["frequency"]
        per_set[name] = {"count": int(f["count"][0]), "spectrum": f["spectrum"], "noise": float(f["noise"][0]),
                         "noise_std": float(f["noise_std"][0])}
    frequency = spectrum.summarize(per_set, REAL)
    frequency["image_size"] = list(size)
    if REFERENCE in stats:
        frequency["reference_note"] = ("reference = bicubic Xb of the --reference HR images: models.downscale "
                                       "(antialiased bicubic) by scale = HR width / analysis width")
    return frequency


def _warn_about_sets(decoded: dict, size: tuple[int, int], rep: Reporter) -> dict[str, list[str]]:
    """Warn about unreadable and converted images (and resized reference Xb); returns the unreadable files per set."""
    unreadable = {}
    for name, (image_set, meta) in decoded.items():
        lines = [f"{path}: {reason}" for path, reason in image_set.skipped]
        for line in lines:
            rep.warn(f"skipped unreadable {name} image {line}")
        if lines:
            unreadable[name] = lines
        if meta.get("converted"):
            rep.warn(f"{meta['converted']} {name} image(s) converted to 8-bit RGB (grayscale, palette, alpha, 16-bit or CMYK)")
    if REFERENCE in decoded and decoded[REFERENCE][1].get("resized"):
        rep.warn(f"{decoded[REFERENCE][1]['resized']} reference Xb image(s) resized to {size[0]}x{size[1]} "
                 "after the bicubic downscale (HR aspect ratio or size not a multiple of the analysis size)")
    return unreadable


def structure_section(stats: dict[str, dict]) -> dict:
    """The structure report (autocorrelation, channel correlation, 2-D spectrum; distances to the real set)."""
    from ..metrics import structure

    return structure.summarize({name: s["structure"] for name, s in stats.items()}, REAL)


def _draw_plot(frequency: dict, stats: dict[str, dict], plot_path: Path) -> str:
    """The radial spectra of every set as a log-scale line plot, over each set's 2-D spectrum (log10) and
    autocorrelation map, so that shape and orientation compare as well as level; returns its path."""
    from ..plumbing.plots import lines_and_maps_png
    from ..plumbing.writes import write_bytes_atomic

    freqs = frequency["frequencies"]
    labels = {FAKE: "fake", REAL: "real", REFERENCE: "reference Xb (bicubic)"}
    series = {f"{labels[n]} (n={s['count']})": (freqs, s["spectrum"]) for n, s in frequency["sets"].items()}
    names = list(frequency["sets"])
    maps = {"2-D spectrum, log10": [(labels[n], np.log10(np.maximum(stats[n]["structure"]["spectrum_2d"], 1e-12))) for n in names],
            "autocorrelation": [(labels[n], stats[n]["structure"]["autocorrelation"]) for n in names]}
    write_bytes_atomic(plot_path, lines_and_maps_png(series, maps, title="Radially averaged power spectrum (luminance)",
                                                     xlabel="spatial frequency (cycles/pixel)", ylabel="power", logy=True,
                                                     kind=PLOT_KIND))
    return str(plot_path)


def build_report(inputs: Inputs, decoded: dict, metrics: dict, frequency: dict, run: dict, rep: Reporter) -> dict:
    """The report dict (keys in docs/eval.md), JSON-safe."""
    from ..metrics import fid as fidmod

    size, weights = run["size"], run["weights"]
    meta = {name: m for name, (_, m) in decoded.items()}
    counts = {FAKE: len(decoded[FAKE][0].paths), REAL: len(decoded[REAL][0].paths),
              REFERENCE: len(decoded[REFERENCE][0].paths) if REFERENCE in decoded else None}
    ref_dir = inputs.dirs.get(REFERENCE)
    return jsonable({
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
            "fake_dir": str(inputs.dirs[FAKE]), "real_dir": str(inputs.dirs[REAL]), "reference_dir": str(ref_dir) if ref_dir else None,
            "fid": weights is not None, "feature_extractor": fidmod.EXTRACTOR_NAME if weights else None,
            "feature_layer": fidmod.FEATURE_LAYER if weights else None,
            "inception_weights": weights.describe() if weights else None,
            "kid_subsets": fidmod.KID_SUBSETS if weights else None,
            "batch_size": run["batch_size"], "device": str(_device()) if weights is not None else None,
            "size_requested": list(run["requested"]) if run["requested"] else None, "cache_dir": str(run["cache_dir"]),
            "data_cache_dir": run["data_cache_dir"], "dsgan_cli_version": __version__,
        },
        "frequency": frequency,
        "structure": run["structure"],
        "artefacts": reference_artefacts(decoded[FAKE][0], inputs.dirs[FAKE], decoded[REFERENCE][0], ref_dir) if ref_dir else None,
        "plot": run["plot"],
    })


def evaluate(fake_dir, real_dir, *, reference_dir=None, inception_weights=None, fid=True, batch_size=64,
             cache_dir=None, data_cache_dir=None, plot_path=None, json_path=None, progress=True,
             allow_random_inception=False, size=None, console=None) -> dict:
    """Compare ``fake_dir`` with ``real_dir``: FID/KID (unless ``fid=False``) and the frequency report.

    ``plot_path=None`` draws no plot (the CLI picks a default path); ``json_path`` ("-" for stdout)
    writes the report; ``size`` (N, "WxH" or (W, H)) forces the analysis size; ``cache_dir`` holds
    the per-set statistics, ``data_cache_dir`` the decoded images (train's default; "none": a
    temporary folder). Returns the report dict (keys in docs/eval.md).
    Raises :class:`DsganError` for user errors.
    """
    from rich.console import Console

    from ..metrics import fid as fidmod

    rep = Reporter(console if console is not None else Console(stderr=True))
    inputs = collect_sets(fake_dir, real_dir, reference_dir, fid=fid, batch_size=batch_size, plot_path=plot_path, json_path=json_path)
    requested = parse_size(size)
    check_cache_folders({"--cache-dir": cache_dir, "--data-cache-dir": None if str(data_cache_dir) == "none" else data_cache_dir})
    weights = fidmod.resolve_weights(inception_weights, allow_random_inception) if fid else None
    if weights is not None and weights.kind == "random":
        rep.warn("Inception-v3 with RANDOM weights (--random-inception, meant for tests): FID/KID say nothing about image quality")
    analysis, needs_resize, seen = choose_size(inputs.files[FAKE], inputs.files[REAL], requested)
    if needs_resize:
        rep.warn(f"images are resized (bicubic) to {analysis[0]}x{analysis[1]} for the comparison; "
                 f"sizes found: fake {seen[FAKE]}, real {seen[REAL]}")
    stats_dir = Path(cache_dir) if cache_dir is not None else fidmod.default_cache_dir()
    with data_cache(data_cache_dir) as pixels, progress_bar(progress, console=rep.console) as bar:
        decoded = decode_sets(inputs, analysis, pixels, bar)
        unreadable = _warn_about_sets(decoded, analysis, rep)
        stats, cached = set_statistics(decoded, weights, stats_dir, int(batch_size), bar)
        metrics = fid_kid(stats, rep) if weights is not None else dict.fromkeys(
            ("fid", "kid_mean", "kid_std", "kid_subset_size", "floor", "reference_xb", "equal_sizes", "closes"))
        frequency = frequency_section(stats, analysis)
        run = {"size": analysis, "weights": weights, "needs_resize": needs_resize, "unreadable": unreadable, "cached": cached,
               "batch_size": int(batch_size), "requested": requested, "cache_dir": stats_dir,
               "data_cache_dir": None if str(data_cache_dir) == "none" else str(pixels),
               "structure": structure_section(stats),
               "plot": _draw_plot(frequency, stats, Path(plot_path)) if plot_path is not None else None}
        result = build_report(inputs, decoded, metrics, frequency, run, rep)
    if json_path is not None:
        write_json(result, json_path)
    return result


def check_cache_folders(folders: dict[str, str | Path | None]) -> None:
    """Refuse, before any work, a cache option naming something that exists and is no folder: the cache would be
    silently unused (statistics) or fail late (decoded images)."""
    for option, folder in folders.items():
        if folder in (None, ""):
            continue
        try:
            mode = os.stat(folder).st_mode
        except FileNotFoundError:
            continue  # created when first written
        except OSError as e:
            raise file_error(folder, f"cannot use it as the {option} folder ({e.strerror or e})") from None
        if not stat.S_ISDIR(mode):
            raise file_error(folder, f"exists and is {file_kind(mode)}; {option} names a folder for the cache")


def exit_code(result: dict) -> int:
    """0, or 1 when some images could not be read."""
    return EXIT_ITEMS_FAILED if result.get("unreadable") else 0


def verdict_line(result: dict) -> str:
    """What the FID means, in one line."""
    floor, xb, part, eq = result.get("floor"), result.get("reference_xb"), result.get("closes"), result.get("equal_sizes")
    if part is not None:
        return (f"Xd closes {100 * part:.0f}% of the way from Xb to the real floor (at {eq['sizes'][0]} vs "
                f"{eq['sizes'][1]} images: Xb FID {eq['xb_fid']:.2f}, Xd {eq['fake_fid']:.2f}, floor {floor['fid']:.2f})")
    if eq and eq.get("no_verdict"):
        return f"no verdict: {eq['no_verdict']}"
    if xb and floor:
        return (f"Xb is already at the real floor (FID {eq['xb_fid']:.2f} vs {floor['fid']:.2f} at equal sizes): "
                "FID cannot rank Xd here")
    if floor:
        return (f"FID {result['fid']:.2f} against a real floor of {floor['fid']:.2f} (two halves of the real set); "
                "give --reference HR for the Xb baseline")
    return "too few real images (under 4) for the real floor: FID has no scale here"


def structure_table(structure: dict, console) -> None:
    """The structure of each set's fine detail (shape, not level) and how far it lies from the real set's."""
    from rich.table import Table

    t = Table(title="Structure of the fine detail (high-pass x - box5(x))")
    for col in ("set", "lag-1 corr. h / v", "channel corr.", "anisotropy / orientation", "distance to real: autocorr. / channels / 2-D spectrum"):
        t.add_column(col, justify="left" if col == "set" else "right")
    for name, s in structure["sets"].items():
        d = s["distance"]
        t.add_row("reference Xb" if name == REFERENCE else name, f"{s['lag1_horizontal']:.2f} / {s['lag1_vertical']:.2f}",
                  f"{s['mean_channel_correlation']:.2f}", f"{s['anisotropy']:.2f} / {s['orientation_deg']:.0f} deg",
                  "-" if d is None else f"{d['autocorrelation']:.3f} / {d['channel_correlation']:.3f} / {d['spectrum_2d']:.3f}")
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
        t.add_row("KID", f"{result['kid_mean']:.6f} ± {result['kid_std']:.6f}", f"subset size {result['kid_subset_size']}, "
                  f"{result['settings']['kid_subsets']} subsets")
        floor, xb = result.get("floor"), result.get("reference_xb")
        if floor:
            t.add_row("FID real floor", f"{floor['fid']:.4f}", f"two random halves of the real set ({floor['halves'][0]} vs "
                      f"{floor['halves'][1]}): the best any fake set can do; KID {floor['kid_mean']:.6f}")
        if xb:
            t.add_row("FID Xb", f"{xb['fid']:.4f}", f"bicubic of the reference ({xb['sizes'][0]} images) vs real "
                      f"({xb['sizes'][1]}): what Xd must beat; KID {xb['kid_mean']:.6f}")
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
        console.print(f"against each image's reference Xb ({art['pairs']} pairs): colour shift R {r:+.2f} G {g:+.2f} "
                      f"B {b:+.2f} levels; border/interior residual {border} (1.0 = no border artefact)",
                      markup=False, highlight=False)
    if result.get("plot"):
        console.print(f"spectrum plot: {result['plot']}", markup=False, highlight=False)
    else:
        console.print("no spectrum plot: name one with --plot PATH, or give --json PATH to get one beside the report",
                      markup=False, highlight=False)
