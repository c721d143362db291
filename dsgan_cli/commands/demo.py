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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import known
from ..plumbing import writes
from ..plumbing.errors import EXIT_ITEMS_FAILED, DsganError
from .demo_data import QUICK_SPEC, DataSpec, HeldOut, build_data, holdout_targets, load_arrays, write_bicubic_set
from .demo_report import SR_GAIN_MIN_DB, print_summary, sr_picture, write_report

#: The built-in recipe the demo trains with (``--recipe`` takes another name or a file).
DEFAULT_RECIPE = "idphoto"
#: Marks a folder as made by the demo, so the demo may replace its own results there.
MARKER = ".dsgan-demo"


#: The demo's data (the recipe's is for aligned faces): 128 px HR patches, 64 px LR, decoded once
#: in RAM and so small that DataLoader workers would only compete with training for the cores.
DEMO_OVERRIDES = ("data.hr_size=128", "data.lr_size=64", "data.num_workers=0")


#: Recipe overrides of the quick mode (CI): tiny images, a tiny generator, a few steps.
QUICK_OVERRIDES = (
    "data.hr_size=32",
    "data.lr_size=16",
    "data.crop_size=0",
    "data.num_workers=0",
    "model.n_res_blocks=2",
    "model.channels=16",
    'perceptual.layers=["relu1_2"]',
    "train.iterations=6",
    "train.batch_size=4",
    "train.checkpoint_every=6",
    "train.sample_every=3",
    "train.log_every=1",
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
        f'perceptual loss: RANDOM VGG19 features (perceptual.weights="random"): pretrained VGG19 is not cached at {cached}. '
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
            message = (
                "interrupted" if isinstance(e, KeyboardInterrupt) else str(e) if isinstance(e, DsganError) else f"{type(e).__name__}: {e}"
            )
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
    xb_paths = steps.run(
        "bicubic Xb of held-out photos", lambda: write_bicubic_set(data_dir / "holdout_hr", data_dir / "holdout_xb", spec.scale)
    )
    result = steps.run("train", lambda: run_train(recipe, opts.progress))
    steps.run("degrade held-out photos", lambda: run_degrade(data_dir / "holdout_hr", xd_dir, result.generator_path, opts.progress))
    sr = steps.run(
        "SR from bicubic pairs vs SR from DSGAN pairs",
        lambda: run_sr_check(data_dir, fresh_dir(out / "pairs"), result.generator_path, xb_paths, spec, report_dir, opts, console),
    )
    evaluation = steps.run(
        "eval", lambda: run_eval(xd_dir, data_dir / "lr_real", data_dir / "holdout_hr", report_dir, out / "eval_cache", opts, console)
    )
    held = HeldOut(data_dir, xb_paths, xd_dir, spec)
    return steps.run("report", lambda: write_report(report_dir, held, result, evaluation, sr, state))


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
        console.print('recipe override: --set perceptual.weights="random"', style=style)
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


#: SR-check training steps (about a minute each on two cores in the full demo).
SR_STEPS, SR_STEPS_QUICK = 500, 10


def run_sr_check(
    data_dir: Path,
    pairs_dir: Path,
    generator_path: Path,
    xb_paths: list[Path],
    spec: DataSpec,
    report_dir: Path,
    opts: DemoOptions,
    console,
) -> dict[str, Any]:
    """Train the small SR net on bicubic pairs and on DSGAN pairs (``pairs`` code path) of the training HR set,
    apply both to the held-out real-LR photos and score them against HR; one picture per photo."""
    from ..data.images import list_images
    from ..engines.run_settings import RunOptions
    from ..metrics import srcheck
    from .pairs import make_pairs

    summary = make_pairs(data_dir / "hr", pairs_dir, generator_path, RunOptions(progress=opts.progress), overwrite=True)
    if summary.failed:
        path, reason = summary.failed[0]
        raise DsganError(f"pairs: {len(summary.failed)} image(s) failed, first {path}: {reason}", EXIT_ITEMS_FAILED)
    hr_paths = list_images(data_dir / "hr")
    hr = load_arrays(hr_paths)
    lr = {"bicubic": [known.xb_of(h, spec.scale) for h in hr], "DSGAN": load_arrays([pairs_dir / "lr" / p.name for p in hr_paths])}
    held_hr = load_arrays([data_dir / "holdout_hr" / (p.stem + ".png") for p in xb_paths])
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
    return {
        "psnr_sr_bicubic_pairs": mean["bicubic"],
        "psnr_sr_dsgan_pairs": mean["DSGAN"],
        "gain_db": gain,
        "photos_improved": sum(p["psnr_sr_dsgan_pairs"] > p["psnr_sr_bicubic_pairs"] for p in photos),
        "photos": photos,
        "sr_steps": steps,
        "gain_min_db": SR_GAIN_MIN_DB,
        "folder": str(photo_dir),
        "test": "held-out HR photos; real LR = their bicubic Xb through the real degradation; PSNR over RGB, 2-px border cropped",
    }


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
        note = (
            "FID/KID skipped: Inception-v3 weights are not available offline (torch-fidelity downloads them on first use; "
            "pass --inception-weights PATH to include them). The frequency/noise report needs no network."
        )
        console.print(note, style="yellow")
    else:
        note = f"FID/KID with Inception-v3 weights {weights} (few, small images: a rough indication only)"
        console.print(note)
    result = evaluate(
        xd_dir,
        real_dir,
        EvalOptions(
            reference_dir=hr_dir,
            inception_weights=weights,
            fid=weights is not None,
            cache_dir=cache_dir,
            json_path=report_dir / "eval.json",
            progress=opts.progress,
        ),
        console=console,
    )
    return {"fid_note": note, "fid_computed": weights is not None, "result": result}
