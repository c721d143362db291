"""``dsgan eval``: FID/KID between a fake and a real folder, plus the frequency/noise report.

The steps: collect the sets -> decode each set once into the memory-mapped uint8
cache that ``train`` uses (:mod:`dsgan_cli.data.datacache`; a later run with unchanged
files maps it instead of decoding) -> per-set frequency statistics and Inception
features, cached by the decoded set's content key (:mod:`dsgan_cli.metrics.set_stats`) -> FID/KID
(:mod:`dsgan_cli.metrics.fid_kid`) -> frequency report -> the report dict (:mod:`.eval_report`).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import ImageReadError, image_size, load_rgb, require_images
from ..data.sets import ImageSet
from ..plumbing import writes
from ..plumbing.errors import EXIT_ITEMS_FAILED, DsganError, file_error
from ..plumbing.progress import progress_bar
from ..plumbing.reads import file_kind
from ..plumbing.writes import check_output_file
from .eval_report import FAKE, REAL, REFERENCE, Reporter, build_report, draw_plot, frequency_section, inside, structure_section, write_json


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


@dataclass
class Inputs:
    """The sets of one run: folder and image files per set name (fake, real and, with --reference, reference)."""

    dirs: dict[str, Path]
    files: dict[str, list[Path]]


@dataclass(frozen=True)
class EvalOptions:
    """What ``eval`` compares besides the two folders, and how; the defaults are the command line's."""

    reference_dir: str | Path | None = None  # the HR folder the fake images were made from: adds Xb and the verdict
    size: str | int | tuple | None = None  # N, "WxH" or (W, H): the analysis size [default: the real images' most common]
    fid: bool = True  # FID/KID; False: the frequency and structure reports only
    inception_weights: str | Path | None = None  # a local Inception-v3 weights file
    allow_random_inception: bool = False  # randomly initialised Inception (tests only)
    batch_size: int = 64  # images per Inception batch
    cache_dir: str | Path | None = None  # the per-set statistics [default: the tool's cache]
    data_cache_dir: str | Path | None = None  # the decoded images [default: train's]; "none": a temporary folder
    plot_path: str | Path | None = None  # the spectrum plot; None: no plot (the CLI picks a default path)
    json_path: str | Path | None = None  # where the report goes as JSON; "-": stdout
    progress: bool = True


def collect_sets(fake_dir, real_dir, opts: EvalOptions) -> Inputs:
    """List the sets and check every argument and output path before any work (one-line errors)."""
    reference_dir, plot_path, json_path = opts.reference_dir, opts.plot_path, opts.json_path
    if int(opts.batch_size) < 1:
        raise DsganError(f"--batch-size must be at least 1, got {opts.batch_size}")
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
            if out is not None and inside(out, d):
                raise file_error(out, f"the {what} would be written inside the input folder {d}; choose a path outside the sets")
    if json_path not in (None, "-") and Path(json_path).is_dir():
        raise file_error(json_path, "--json path is a folder; give a file name such as report.json")
    # Before the work: a report that cannot be written, or would replace a symlink or device, fails now.
    for out, what in ((plot_path, "plot"), (None if json_path in (None, "-") else json_path, "JSON report")):
        if out is not None:
            check_output_file(out, what)
    if opts.fid and min(len(files[FAKE]), len(files[REAL])) < 2:
        raise DsganError(
            f"FID/KID need at least 2 images per set (fake: {len(files[FAKE])}, real: {len(files[REAL])}); "
            "use --no-fid for the frequency report only"
        )
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

        out[name] = cached_decode(
            folder,
            size,
            what=name,
            variant="eval-xb" if name == REFERENCE else "eval",
            decode=_decoder(name, size),
            cache_dir=cache_dir,
            workers=workers,
            progress=start,
        )
    return out


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
        rep.warn(
            f"{decoded[REFERENCE][1]['resized']} reference Xb image(s) resized to {size[0]}x{size[1]} "
            "after the bicubic downscale (HR aspect ratio or size not a multiple of the analysis size)"
        )
    return unreadable


def evaluate(fake_dir, real_dir, opts: EvalOptions = EvalOptions(), console=None) -> dict:
    """Compare ``fake_dir`` with ``real_dir``: FID/KID (unless ``opts.fid`` is False) and the frequency report.

    ``opts.plot_path=None`` draws no plot (the CLI picks a default path); ``opts.json_path`` ("-" for stdout)
    writes the report; ``opts.size`` (N, "WxH" or (W, H)) forces the analysis size; ``opts.cache_dir`` holds
    the per-set statistics, ``opts.data_cache_dir`` the decoded images (train's default; "none": a
    temporary folder). Warnings go to ``console`` (default: stderr). Returns the report dict (keys in docs/eval.md).
    Raises :class:`DsganError` for user errors.
    """
    from rich.console import Console

    from ..metrics import fid as fidmod
    from ..metrics.fid_kid import fid_kid
    from ..metrics.set_stats import set_statistics

    rep = Reporter(console if console is not None else Console(stderr=True))
    inputs = collect_sets(fake_dir, real_dir, opts)
    requested = parse_size(opts.size)
    check_cache_folders(
        {"--cache-dir": opts.cache_dir, "--data-cache-dir": None if str(opts.data_cache_dir) == "none" else opts.data_cache_dir}
    )
    weights = fidmod.resolve_weights(opts.inception_weights, opts.allow_random_inception) if opts.fid else None
    if weights is not None and weights.kind == "random":
        rep.warn("Inception-v3 with RANDOM weights (--random-inception, meant for tests): FID/KID say nothing about image quality")
    analysis, needs_resize, seen = choose_size(inputs.files[FAKE], inputs.files[REAL], requested)
    if needs_resize:
        rep.warn(
            f"images are resized (bicubic) to {analysis[0]}x{analysis[1]} for the comparison; "
            f"sizes found: fake {seen[FAKE]}, real {seen[REAL]}"
        )
    stats_dir = Path(opts.cache_dir) if opts.cache_dir is not None else fidmod.default_cache_dir()
    with data_cache(opts.data_cache_dir) as pixels, progress_bar(opts.progress, console=rep.console) as bar:
        decoded = decode_sets(inputs, analysis, pixels, bar)
        unreadable = _warn_about_sets(decoded, analysis, rep)
        stats, cached = set_statistics(decoded, weights, stats_dir, int(opts.batch_size), bar)
        metrics = (
            fid_kid(stats[FAKE]["inception"], stats[REAL]["inception"], stats.get(REFERENCE, {}).get("inception"), rep.warn)
            if weights is not None
            else dict.fromkeys(("fid", "kid_mean", "kid_std", "kid_subset_size", "floor", "reference_xb", "equal_sizes", "closes"))
        )
        frequency = frequency_section(stats, analysis)
        run = {
            "size": analysis,
            "weights": weights,
            "needs_resize": needs_resize,
            "unreadable": unreadable,
            "cached": cached,
            "batch_size": int(opts.batch_size),
            "requested": requested,
            "cache_dir": stats_dir,
            "data_cache_dir": None if str(opts.data_cache_dir) == "none" else str(pixels),
            "structure": structure_section(stats),
            "plot": draw_plot(frequency, stats, Path(opts.plot_path)) if opts.plot_path is not None else None,
        }
        result = build_report(inputs.dirs, decoded, metrics, frequency, run, rep)
    if opts.json_path is not None:
        write_json(result, opts.json_path)
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
