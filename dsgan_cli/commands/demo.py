"""``make demo``: DSGAN learns a known degradation from real photographs, end to end on a CPU.

The demo builds two unpaired sets from photographs that scikit-image ships
(no download): clean HR patches, and "real" LR patches from *other* photos
degraded by a documented recipe (sensor-like Gaussian noise, then JPEG).
It then runs the same code a user runs -- ``train``, ``degrade`` on held-out
photos, ``pairs``, ``eval`` -- and shows what the method is for: a small SR
network trained on DSGAN pairs against the same network trained on plain
bicubic pairs, both applied to held-out real-LR photos. The verdict is that
paired result (PSNR against the held-out HR), not a statistic of Xd.

Run with ``dsgan demo [--out demo_output] [--quick]`` (``make demo``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..data import known
from ..plumbing import writes
from ..plumbing.errors import EXIT_ITEMS_FAILED, DsganError
from ..plumbing.jsonl import read_jsonl

#: The built-in recipe the demo trains with (``--recipe`` takes another name or a file).
DEFAULT_RECIPE = "idphoto"
#: Marks a folder as made by the demo, so the demo may replace its own results there.
MARKER = ".dsgan-demo"
DATA_VERSION = 2

# Source photographs (scikit-image ships these files; nothing is fetched). HR and real LR
# come from disjoint photos with a similar mix of content (a portrait or animal, objects, a
# grey-level scene, microscopy, a texture, a dark sky), so the discriminator can tell them
# apart only by the degradation, not by what they show.
HR_SOURCES = ("astronaut", "coffee", "camera", "immunohistochemistry", "brick", "rocket")
LR_SOURCES = ("chelsea", "stereo_motorcycle", "coins", "retina", "gravel", "hubble_deep_field")
#: Held-out HR patches come from the right-hand part of the real-LR photos, real LR patches
#: from the rest: never a training input, and the same kind of scenes as the real LR set, so
#: their spectra differ from it only by the degradation.
HOLDOUT_SPLIT = 0.7


@dataclass(frozen=True)
class DataSpec:
    """How the demo data is built; stored next to the data so a changed spec rebuilds it."""

    hr_size: int = 128
    scale: int = 2
    n_hr: int = 480
    n_lr: int = 480
    n_holdout: int = 32
    # Noise before compression, as in a camera. JPEG quality 60 or lower quantises most of this
    # noise away (Immerkaer estimate on these LR sets: 2.1 at q60, 5.4 at q80, 1.9 clean),
    # leaving too little for anyone to see or measure.
    noise_sigma: float = 12.0  # Gaussian sensor-like noise, 0-255 units, per pixel and channel
    jpeg_quality: int = 80
    source_short_side: tuple[int, ...] = (448, 320)  # photos are shrunk first so patches hold scenes, not blur
    seed: int = 0
    version: int = DATA_VERSION

    @property
    def lr_size(self) -> int:
        """Side of the LR images."""
        return self.hr_size // self.scale

    def degrade(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The demo's "real" degradation of a clean LR image: Gaussian noise, then JPEG (:func:`known.degrade`)."""
        return known.degrade(lr, rng, noise=self.noise_sigma, jpeg=self.jpeg_quality)


QUICK_SPEC = DataSpec(hr_size=32, n_hr=24, n_lr=24, n_holdout=6, source_short_side=(96,))


def build_data(data_dir: Path, spec: DataSpec, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or reuse, when the stored spec matches) the demo's HR, real-LR and held-out sets."""
    manifest_path = data_dir / "manifest.json"
    wanted = asdict(spec)
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if manifest.get("spec") == json.loads(json.dumps(wanted)) and _complete(data_dir, manifest):
            log(f"Reusing demo data in {data_dir}")
            return manifest
    for sub in ("hr", "lr_real", "holdout_hr", "holdout_xb"):
        if (data_dir / sub).exists():
            writes.remove_own(data_dir / sub)
    writes.remove_own(manifest_path)
    log(f"Building demo data in {data_dir} from scikit-image photographs ...")
    rng = np.random.default_rng(spec.seed)
    hr = known.patches(known.pyramid(HR_SOURCES, spec.source_short_side), spec.n_hr, spec.hr_size, rng, flip=True)
    lr_regions, holdout_regions = known.split_columns(known.pyramid(LR_SOURCES, spec.source_short_side), HOLDOUT_SPLIT)
    lr_clean = known.patches(lr_regions, spec.n_lr, spec.hr_size, rng, flip=True)
    lr_real = [spec.degrade(known.xb_of(p, spec.scale), rng) for p in lr_clean]
    holdout = known.patches(holdout_regions, spec.n_holdout, spec.hr_size, rng, flip=True)
    known.save_pngs(data_dir / "hr", hr, "hr")
    known.save_pngs(data_dir / "lr_real", lr_real, "lr")
    known.save_pngs(data_dir / "holdout_hr", holdout, "holdout")
    manifest = {
        "spec": wanted,
        "sources": {"hr": list(HR_SOURCES), "lr_real": list(LR_SOURCES), "holdout_hr": list(LR_SOURCES)},
        "holdout_note": (f"held-out HR patches are cut from the right {1 - HOLDOUT_SPLIT:.0%} of the real-LR photos, "
                         f"real LR patches from the left {HOLDOUT_SPLIT:.0%}; no held-out image is a training input"),
        "counts": {"hr": len(hr), "lr_real": len(lr_real), "holdout_hr": len(holdout)},
        "degradation": (
            f"real LR = antialiased bicubic x{spec.scale} downscale of {spec.hr_size}px crops, "
            f"+ Gaussian noise sigma {spec.noise_sigma:g}/255 per pixel and channel, then JPEG quality {spec.jpeg_quality}"
        ),
    }
    from ..plumbing.writes import write_bytes_atomic

    text = json.dumps(manifest, indent=2)
    write_bytes_atomic(manifest_path, text.encode())
    return json.loads(text)


def _complete(data_dir: Path, manifest: dict[str, Any]) -> bool:
    """True when every set holds the number of images the manifest promises."""
    counts = manifest.get("counts", {})
    return bool(counts) and all(
        (data_dir / name).is_dir() and len(list((data_dir / name).glob("*.png"))) == n for name, n in counts.items()
    )


# --------------------------------------------------------------------------- held-out Xb


def write_bicubic_set(hr_dir: Path, out_dir: Path, scale: int) -> list[Path]:
    """Xb for every held-out HR image, made with the package's downscale (what ``degrade`` feeds G)."""
    from ..data.images import list_images, load_rgb
    from ..plumbing.writes import save_image_atomic

    paths = []
    for src in list_images(hr_dir):
        dest = out_dir / (src.stem + ".png")
        if not dest.is_file():
            img, _ = load_rgb(src)
            save_image_atomic(Image.fromarray(known.xb_of(np.asarray(img), scale)), dest)
        paths.append(dest)
    return paths


# --------------------------------------------------------------------------- report pictures


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
        line_plot(series, path, title=f"Training losses ({how})",
                  xlabel="step", ylabel="loss", logy=True, kind="demo-losses")
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
    line_plot(series, plot_path, title="Radially averaged power spectrum: held-out Xb and Xd vs real LR",
              xlabel="spatial frequency (cycles/pixel)", ylabel="power", logy=True, kind="demo-spectrum")
    return {
        "noise": {name: float(per_set[name]["noise"]) for name in order},
        "spectral_distance": {name: float(per_set[name]["spectral_distance"]) for name in order},
        "spectral_distance_high": {name: float(per_set[name]["spectral_distance_high"]) for name in order},
        "high_band": frequency.get("high_band"),
        "image_size": frequency.get("image_size"),
        "definitions": frequency.get("definitions"),
    }


# --------------------------------------------------------------------------- verdict


def holdout_targets(xb_paths: list[Path], spec: DataSpec) -> list[np.ndarray]:
    """The known answer for each held-out Xb: the demo's real degradation applied to it (seeded)."""
    rng = np.random.default_rng(spec.seed + 1)
    return [spec.degrade(xb, rng) for xb in _load_arrays(xb_paths)]


def judge(xbs: list[np.ndarray], xds: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, Any]:
    """Did G learn the known degradation? Paired figures on the held-out photos against their targets."""
    from ..metrics.paired import TARGETS, paired_report, verdict

    figures = paired_report(xbs, xds, targets, min_flat=32)
    checks = verdict(figures, grain=True, sharpness=False)
    return {"learned": all(checks.values()), "checks": checks, "paired": figures, "targets": TARGETS}


# --------------------------------------------------------------------------- pipeline

#: The demo's data (the recipe's is for aligned faces): 128 px HR patches, 64 px LR, decoded once
#: in RAM and so small that DataLoader workers would only compete with training for the cores.
DEMO_OVERRIDES = ("data.hr_size=128", "data.lr_size=64", "data.num_workers=0")

#: Recipe overrides of the quick mode (CI): tiny images, a tiny generator, a few steps.
QUICK_OVERRIDES = (
    "data.hr_size=32", "data.lr_size=16", "data.crop_size=0", "data.num_workers=0",
    "model.n_res_blocks=2", "model.channels=16", 'perceptual.layers=["relu1_2"]',
    "train.iterations=6", "train.batch_size=4", "train.checkpoint_every=6", "train.sample_every=3", "train.log_every=1",
)


@dataclass
class DemoOptions:
    """What the command line chose."""

    out: Path = Path("demo_output")
    quick: bool = False
    recipe: str | Path = DEFAULT_RECIPE
    overrides: list[str] = field(default_factory=list)
    perceptual_weights: str = "auto"
    inception_weights: str | None = None
    require_learning: bool = False
    progress: bool = True


def vgg_cache_path() -> Path:
    """Where the pretrained VGG19 file is kept (the torch hub cache)."""
    from ..method.weights import VGG19, hub_cache_file

    return hub_cache_file(VGG19)


def choose_perceptual_weights(choice: str) -> tuple[str, str]:
    """The perceptual weights to train with and a sentence telling the user which and why."""
    if choice != "auto":
        return choice, f"perceptual loss: VGG19 weights {choice!r} (from --perceptual-weights)"
    cached = vgg_cache_path()
    if cached.is_file():
        return "torchvision", f"perceptual loss: pretrained VGG19 ({cached})"
    return "random", (
        f"perceptual loss: RANDOM VGG19 features (perceptual.weights=\"random\"): pretrained VGG19 is not cached at {cached}. "
        "The learned degradation comes from the GAN and colour losses; for pretrained features put the file there "
        "(or pass --perceptual-weights PATH) and run again"
    )


def prepare_out_dir(out: Path) -> None:
    """Create the demo folder, refusing a non-empty folder the demo did not make."""
    if out.exists() and not out.is_dir():
        raise DsganError(f"{out}: exists and is not a folder")
    if out.is_dir() and not (out / MARKER).exists():
        # Only other demo folders (e.g. demo_output/quick) may already be inside.
        foreign = [e for e in out.iterdir() if not (e.is_dir() and (e / MARKER).exists())]
        if foreign:
            raise DsganError(f"{out}: folder is not empty and was not made by the demo; choose another --out")
    writes.make_dirs(out)
    writes.write_bytes_atomic(out / MARKER, b"made by dsgan demo; its results here are replaced on every run\n")


def fresh_dir(path: Path) -> Path:
    """Empty a result folder inside the demo folder (the demo's own output of an earlier run)."""
    if path.exists():
        writes.remove_own(path)
    writes.make_dirs(path)
    return path


class StepLog:
    """Times the demo's steps for the summary and records a failed one for ``failed.json``."""

    def __init__(self, console):
        self.console = console
        self.records: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one step and time it; an error is recorded and shown, then propagates unchanged."""
        self.console.rule(f"[bold]{name}")
        t = time.perf_counter()
        try:
            result = fn()
        except BaseException as e:
            message = ("interrupted" if isinstance(e, KeyboardInterrupt)
                       else str(e) if isinstance(e, DsganError) else f"{type(e).__name__}: {e}")
            self.records.append({"step": name, "ok": False, "seconds": round(time.perf_counter() - t, 2), "error": message})
            self.console.print(f"[red]FAILED[/] {name}: {message}")
            raise
        seconds = time.perf_counter() - t
        self.records.append({"step": name, "ok": True, "seconds": round(seconds, 2)})
        self.console.print(f"[green]done[/] {name} in {seconds:.1f} s")
        return result


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """Run the whole demo and return its summary; a failed step raises, leaving ``failed.json``."""
    from rich.console import Console

    from ..plumbing.writes import write_bytes_atomic

    console = Console(stderr=False, highlight=False)
    steps = StepLog(console)
    t_start = time.perf_counter()
    out = opts.out
    state: dict[str, Any] = {"mode": "quick" if opts.quick else "full"}
    prepare_out_dir(out)
    # Results of an earlier run must not pass for this run's if a step fails.
    xd_dir, report_dir = fresh_dir(out / "holdout_xd"), fresh_dir(out / "report")
    writes.remove_own(out / "failed.json")
    try:
        summary = run_steps(opts, steps, state, xd_dir, report_dir, console)
    except Exception:
        write_failure(out, steps, state)
        raise
    total = time.perf_counter() - t_start
    summary["steps"] = steps.records
    summary["total_seconds"] = round(total, 1)
    write_bytes_atomic(report_dir / "summary.json", json.dumps(summary, indent=2).encode())
    print_summary(summary, report_dir, console)
    console.print(f"demo finished in {total / 60:.1f} min; report in {report_dir}")
    if opts.require_learning and not summary["learned"]:
        raise DsganError(f"{report_dir / 'summary.json'}: the degradation was not learned (--require-learning)", EXIT_ITEMS_FAILED)
    return summary


def run_steps(opts: DemoOptions, steps: StepLog, state: dict[str, Any], xd_dir: Path, report_dir: Path, console) -> dict[str, Any]:
    """Recipe, data, Xb, train, degrade, eval, report: the same code paths a user runs."""
    out = opts.out
    recipe = steps.run("recipe", lambda: load_demo_recipe(opts, out, state, console))
    spec = data_spec(recipe, opts.quick)
    data_dir = out / "data"
    manifest = steps.run("data", lambda: build_data(data_dir, spec, console.print))
    state["data"] = manifest
    console.print(f"degradation of the real LR set: {manifest['degradation']}")
    xb_paths = steps.run("bicubic Xb of held-out photos",
                         lambda: write_bicubic_set(data_dir / "holdout_hr", data_dir / "holdout_xb", spec.scale))
    result = steps.run("train", lambda: run_train(recipe, opts.progress))
    steps.run("degrade held-out photos", lambda: run_degrade(data_dir / "holdout_hr", xd_dir, result.generator_path, opts.progress))
    sr = steps.run("SR from bicubic pairs vs SR from DSGAN pairs",
                   lambda: run_sr_check(data_dir, fresh_dir(out / "pairs"), result.generator_path, xb_paths, spec, report_dir,
                                        opts, console))
    evaluation = steps.run("eval", lambda: run_eval(xd_dir, data_dir / "lr_real", data_dir / "holdout_hr", report_dir,
                                                    out / "eval_cache", opts, console))
    return steps.run("report", lambda: write_report(report_dir, data_dir, xb_paths, xd_dir, result, evaluation, state, spec, sr))


def write_failure(out: Path, steps: StepLog, state: dict[str, Any]) -> None:
    """Leave a record of a failed run where the summary would have been."""
    from ..plumbing.writes import write_bytes_atomic

    report = {"ok": False, "steps": steps.records, "mode": state.get("mode")}
    write_bytes_atomic(out / "failed.json", json.dumps(report, indent=2).encode())


def _toml_string(value: str | Path) -> str:
    """A path as a TOML string literal for a ``--set`` override."""
    return json.dumps(str(value))


def load_demo_recipe(opts: DemoOptions, out: Path, state: dict[str, Any], console) -> Any:
    """The demo recipe with the demo's folders, the quick-mode sizes and the perceptual weights filled in."""
    from ..method.recipe import load_recipe, resolve_recipe

    weights, sentence = choose_perceptual_weights(opts.perceptual_weights)
    overrides = [
        f"data.hr_dir={_toml_string(out / 'data' / 'hr')}",
        f"data.lr_dir={_toml_string(out / 'data' / 'lr_real')}",
        f"train.output_dir={_toml_string(out / 'run')}",
        f"perceptual.weights={_toml_string(weights)}",
    ]
    overrides += list(QUICK_OVERRIDES if opts.quick else DEMO_OVERRIDES)
    overrides += opts.overrides
    recipe = load_recipe(opts.recipe, overrides)
    style = "bold yellow" if weights == "random" else ""
    console.print(sentence, style=style)
    if weights == "random":
        console.print("recipe override: --set perceptual.weights=\"random\"", style=style)
    state["recipe_file"] = str(resolve_recipe(opts.recipe))
    state["overrides"] = overrides
    state["perceptual_weights"] = weights
    state["perceptual_note"] = sentence
    r = recipe
    console.print(
        f"training: {r.train.iterations} steps, batch {r.train.batch_size}, HR {r.data.hr_size}px -> LR {r.data.lr_size}px"
        f"{f' (crops {r.data.crop_size}px)' if r.data.crop_size else ''}, generator {r.model.n_res_blocks} blocks x {r.model.channels} channels, "
        f"lr {r.optim.lr:g}, loss weights colour {r.loss.w_color:g} / GAN {r.loss.w_gan:g} / perceptual {r.loss.w_perceptual:g}"
    )
    return recipe


def data_spec(recipe: Any, quick: bool) -> DataSpec:
    """The data to build: sizes from the recipe, counts from the mode."""
    base = QUICK_SPEC if quick else DataSpec()
    return DataSpec(**{**asdict(base), "hr_size": recipe.data.hr_size, "scale": recipe.data.scale})


def run_train(recipe: Any, progress: bool) -> Any:
    """The ``train`` code path, into a fresh run folder."""
    from ..engines.train import train

    run_dir = Path(recipe.train.output_dir)
    if run_dir.exists():
        writes.remove_own(run_dir)  # the demo's own run of an earlier time; the demo always trains anew
    return train(recipe, resume=None, progress=progress)


#: SR-check training steps (about a minute each on two cores in the full demo) and the smallest gain that counts.
SR_STEPS, SR_STEPS_QUICK = 500, 10
SR_GAIN_MIN_DB = 0.1


def run_sr_check(data_dir: Path, pairs_dir: Path, generator_path: Path, xb_paths: list[Path], spec: DataSpec,
                 report_dir: Path, opts: DemoOptions, console) -> dict[str, Any]:
    """Train the small SR net on bicubic pairs and on DSGAN pairs (``pairs`` code path) of the training HR set,
    apply both to the held-out real-LR photos and score them against HR; one picture per photo."""
    from ..metrics import srcheck
    from ..data.images import list_images
    from ..engines.run_settings import RunOptions
    from .pairs import make_pairs

    summary = make_pairs(data_dir / "hr", pairs_dir, generator_path, RunOptions(progress=opts.progress), overwrite=True)
    if summary.failed:
        path, reason = summary.failed[0]
        raise DsganError(f"pairs: {len(summary.failed)} image(s) failed, first {path}: {reason}", EXIT_ITEMS_FAILED)
    hr_paths = list_images(data_dir / "hr")
    hr = _load_arrays(hr_paths)
    lr = {"bicubic": [known.xb_of(h, spec.scale) for h in hr],
          "DSGAN": _load_arrays([pairs_dir / "lr" / p.name for p in hr_paths])}
    held_hr = _load_arrays([data_dir / "holdout_hr" / (p.stem + ".png") for p in xb_paths])
    held_lr = holdout_targets(xb_paths, spec)
    steps = SR_STEPS_QUICK if opts.quick else SR_STEPS
    crop = min(24, spec.lr_size)
    sr = {}
    for kind, lrs in lr.items():
        console.print(f"training the SR net on {kind} pairs ({steps} steps) ...")
        sr[kind] = srcheck.super_resolve(srcheck.train_sr(hr, lrs, seed=spec.seed, steps=steps, crop=crop), held_lr)
    photo_dir = fresh_dir(report_dir / "sr")
    photos = []
    for i, (path, h) in enumerate(zip(xb_paths, held_hr)):
        scores = {kind: srcheck.psnr(sr[kind][i], h) for kind in sr}
        sr_picture(held_lr[i], sr["bicubic"][i], sr["DSGAN"][i], h, scores, photo_dir / f"{path.stem}.png")
        photos.append({"photo": path.stem, "psnr_sr_bicubic_pairs": scores["bicubic"], "psnr_sr_dsgan_pairs": scores["DSGAN"]})
    mean = {kind: float(np.mean([srcheck.psnr(a, b) for a, b in zip(sr[kind], held_hr)])) for kind in sr}
    gain = mean["DSGAN"] - mean["bicubic"]
    return {"psnr_sr_bicubic_pairs": mean["bicubic"], "psnr_sr_dsgan_pairs": mean["DSGAN"], "gain_db": gain,
            "photos_improved": sum(p["psnr_sr_dsgan_pairs"] > p["psnr_sr_bicubic_pairs"] for p in photos),
            "photos": photos, "sr_steps": steps, "gain_min_db": SR_GAIN_MIN_DB, "folder": str(photo_dir),
            "test": "held-out HR photos; real LR = their bicubic Xb through the real degradation; PSNR over RGB, 2-px border cropped"}


def sr_picture(real_lr: np.ndarray, sr_bicubic: np.ndarray, sr_dsgan: np.ndarray, hr: np.ndarray,
               scores: dict[str, float], path: Path, zoom: int = 3) -> None:
    """real LR | SR from bicubic pairs | SR from DSGAN pairs | HR, each titled (with its PSNR), enlarged without smoothing."""
    from PIL import ImageDraw

    from ..plumbing.writes import save_image_atomic

    up = np.asarray(Image.fromarray(real_lr).resize(hr.shape[1::-1], Image.Resampling.NEAREST))
    tiles = [("real LR", up), (f"SR, bicubic pairs {scores['bicubic']:.2f} dB", sr_bicubic),
             (f"SR, DSGAN pairs {scores['DSGAN']:.2f} dB", sr_dsgan), ("HR", hr)]
    h, w = hr.shape[:2]
    tw, th, pad, head = w * zoom, h * zoom, 4, 18
    canvas = Image.new("RGB", (len(tiles) * (tw + pad) + pad, head + th + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (title, tile) in enumerate(tiles):
        draw.text((pad + c * (tw + pad) + 2, 3), title, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(tile).resize((tw, th), Image.Resampling.NEAREST), (pad + c * (tw + pad), head + pad))
    save_image_atomic(canvas, path)


def run_degrade(hr_dir: Path, xd_dir: Path, generator_path: Path, progress: bool) -> Any:
    """The ``degrade`` code path on the held-out photos; any failed image fails the step."""
    from ..engines.run_settings import RunOptions
    from .degrade import degrade_folder

    summary = degrade_folder(hr_dir, xd_dir, generator_path, RunOptions(progress=progress), overwrite=True)
    if summary.failed:
        path, reason = summary.failed[0]
        raise DsganError(f"degrade: {len(summary.failed)} held-out image(s) failed, first {path}: {reason}", EXIT_ITEMS_FAILED)
    return summary


def find_inception_weights(explicit: str | None) -> str | None:
    """A local Inception-v3 weights file for FID: given, or already in torch-fidelity's cache; else None (no download)."""
    if explicit:
        return explicit
    from ..method.weights import INCEPTION, hub_cache_file

    cached = hub_cache_file(INCEPTION)
    return str(cached) if cached.is_file() else None


def run_eval(xd_dir: Path, real_dir: Path, hr_dir: Path, report_dir: Path, cache_dir: Path, opts: DemoOptions, console) -> dict[str, Any]:
    """The ``eval`` code path: Xd vs real LR with the held-out HR as bicubic reference; FID/KID only with local weights."""
    from .evaluate import EvalOptions, evaluate

    weights = find_inception_weights(opts.inception_weights)
    if weights is None:
        note = ("FID/KID skipped: Inception-v3 weights are not available offline (torch-fidelity downloads them on first use; "
                "pass --inception-weights PATH to include them). The frequency/noise report needs no network.")
        console.print(note, style="yellow")
    else:
        note = f"FID/KID with Inception-v3 weights {weights} (few, small images: a rough indication only)"
        console.print(note)
    result = evaluate(xd_dir, real_dir, EvalOptions(reference_dir=hr_dir, inception_weights=weights, fid=weights is not None,
                                                    cache_dir=cache_dir, json_path=report_dir / "eval.json",
                                                    progress=opts.progress), console=console)
    return {"fid_note": note, "fid_computed": weights is not None, "result": result}


def _load_arrays(paths: list[Path]) -> list[np.ndarray]:
    """uint8 RGB arrays of image files, through the package's reader."""
    from ..data.images import load_rgb

    return [np.asarray(load_rgb(p)[0]) for p in paths]


def write_report(report_dir: Path, data_dir: Path, xb_paths: list[Path], xd_dir: Path, train_result: Any,
                 evaluation: dict[str, Any], state: dict[str, Any], spec: DataSpec, sr: dict[str, Any]) -> dict[str, Any]:
    """Sample grid, loss curves, spectrum plot and the summary numbers; returns the summary."""
    from .eval_report import jsonable

    from ..data.images import list_images

    xd_by_stem = {p.stem: p for p in list_images(xd_dir)}
    pairs = [(xb, xd_by_stem[xb.stem]) for xb in xb_paths if xb.stem in xd_by_stem]
    if len(pairs) != len(xb_paths):
        raise DsganError(f"{xd_dir}: degrade wrote {len(pairs)} of {len(xb_paths)} held-out images")
    real_paths = list_images(data_dir / "lr_real")
    xb_list, xd_list = [p[0] for p in pairs], [p[1] for p in pairs]

    n_rows = min(6, len(pairs))
    targets = holdout_targets(xb_list, spec)
    rows = list(zip(_load_arrays(xb_list[:n_rows]), _load_arrays(xd_list[:n_rows]), targets[:n_rows]))
    sample_grid(rows, report_dir / "samples.png")

    records = read_metrics(Path(train_result.output_dir) / "logs" / "metrics.jsonl")
    drawn = loss_plot(records, report_dir / "losses.png")
    if not drawn:
        raise DsganError(f"{train_result.output_dir}: training logged no losses (logs/metrics.jsonl)")

    result = evaluation["result"]
    freq = frequency_numbers(result["frequency"], report_dir / "spectrum.png")
    verdict = judge(_load_arrays(xb_list), _load_arrays(xd_list), targets)
    summary = {
        "ok": True,
        "mode": state["mode"],
        # The point of the tool: SR trained on DSGAN pairs does better on real LR than SR trained on bicubic pairs.
        "learned": sr["gain_db"] >= SR_GAIN_MIN_DB,
        "sr": sr,
        "verdict": {"checks": verdict["checks"], "targets": verdict["targets"],
                    "note": "diagnostics of Xd against its known target; the verdict is the SR result (learned)"},
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
        "train": {"steps": train_result.steps, "generator": str(train_result.generator_path),
                  "last_losses": jsonable(train_result.last_losses)},
        "recipe_file": state["recipe_file"],
        "overrides": state["overrides"],
        "files": {**{name: str(report_dir / name) for name in ("samples.png", "losses.png", "spectrum.png", "summary.json", "eval.json")},
                  "sr_pictures": sr["folder"]},
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
        table.add_row(label, f"{summary['noise'][key]:.2f}", f"{summary['spectral_distance'][key]:.3f}",
                      f"{summary['spectral_distance_high'][key]:.3f}")
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
    paired.add_row("grain in flat regions (std, 0-255)", fmt(p["grain_xd"]), fmt(p["grain_target"]),
                   f">= {t['grain_ratio_min']:.0%} of target")
    paired.add_row("colour shift, worst channel (levels)", fmt(p["colour_shift_max"]), fmt(max(p["colour_shift_target"])),
                   f"<= {t['colour_shift_max']}")
    paired.add_row("border / interior residual", fmt(p["border_ratio_xd"]), fmt(p["border_ratio_target"]),
                   f"<= {t['border_ratio_max']}")
    paired.add_row("residual spectrum distance (Xb = 1)", fmt(p["spectrum_distance_xd"]), "0.00",
                   f"<= {t['spectrum_vs_xb_max']}")
    console.print(paired)
    sr = summary["sr"]
    n = len(sr["photos"])
    console.print(f"SR net on held-out real-LR photos: trained on bicubic pairs {sr['psnr_sr_bicubic_pairs']:.2f} dB, "
                  f"on DSGAN pairs {sr['psnr_sr_dsgan_pairs']:.2f} dB ({sr['gain_db']:+.2f} dB; better on "
                  f"{sr['photos_improved']} of {n} photos)")
    if summary["learned"]:
        console.print(f"[bold green]Learned:[/] SR trained on DSGAN pairs restores held-out real-LR photos "
                      f"{sr['gain_db']:.2f} dB better than SR trained on bicubic pairs.")
    else:
        console.print(
            f"[bold red]NOT learned:[/] SR trained on DSGAN pairs gains {sr['gain_db']:+.2f} dB over bicubic pairs "
            f"(needed: {sr['gain_min_db']:+.2f}). Train longer (--set train.iterations=...) or look at the samples."
        )
    console.print(f"report: {report_dir}/  samples.png  sr/  losses.png  spectrum.png  summary.json")
