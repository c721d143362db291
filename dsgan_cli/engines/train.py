"""DSGAN training: one loop on Accelerate, from one CPU to many GPUs.

:func:`train` is the whole algorithm in one place; the helpers above it only
build things (data, models, checkpoint folders) so that the loop reads top to
bottom: inputs -> discriminator step -> generator step -> log / sample / checkpoint.

The run folder and its checkpoints are :mod:`.rundir`'s. The data order is a pure
function of (seed, step) (see :mod:`dsgan_cli.data.sampling`), so a checkpoint
needs only the step to resume the data stream exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..data.training_sets import load_data
from ..method.recipe import Recipe
from ..plumbing.errors import file_error
from ..plumbing.progress import progress_bar
from ..plumbing.writes import check_output_dir, write_bytes_atomic
from .device import cpu_processes, memory_formats_for, mixed_precision_for, tune_device
from .interrupt import StopOnSignal
from .rankcheck import RankCheck
from .rundir import checkpoint_state, load_resume, read_state, resolve_resume, save_checkpoint, start_run, unlock_run_folder
from .trainlog import RunTiming, print_summary, sample_batch, save_samples

if TYPE_CHECKING:
    from ..method.blur_reading import BlurReading


@dataclass
class TrainResult:
    output_dir: Path
    generator_path: Path  # output_dir / "generator.safetensors" (latest export)
    checkpoint_dir: Path | None  # last full-state checkpoint folder
    steps: int
    last_losses: dict[str, float]
    stopped_by: int | None = None  # the signal that stopped the run early (see .interrupt), same on every rank


# ----------------------------------------------------------------------------- building blocks


def lr_at(step: int, recipe: Recipe) -> float:
    """Learning rate for optimiser step ``step`` (0-based): constant, or linear to 0 after decay_start."""
    o, total = recipe.optim, recipe.train.iterations
    if o.lr_decay == "none" or step < o.decay_start:
        return o.lr
    return o.lr * max(0.0, 1.0 - (step - o.decay_start) / max(1, total - o.decay_start))


def build_accelerator(recipe: Recipe, out: Path, start_step: int, is_main: bool):
    """The one Accelerator: gloo on CPU processes, the launch's or the recipe's precision, trackers on the main process."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from .trainlog import trackers_for

    return Accelerator(
        cpu=cpu_processes(),
        # D's BatchNorm running statistics are never used (D always runs in train mode), so DDP need not
        # broadcast them before each forward; G has no buffers.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        mixed_precision=mixed_precision_for(recipe),
        log_with=trackers_for(out / "logs", keep_until_step=start_step) if is_main else None,
        project_dir=str(out),
    )


def jpeg_quality_for(r: Recipe, lr_set, say: bool) -> int:
    """G's JPEG quality: ``model.jpeg_quality`` as given, or with -1 the one read off the real LR (0 when they
    show none; ``model.grid_quality`` when they show a codec's block grid but no quality); ``say`` prints what was
    found. The same on every rank: all read the same images."""
    from ..method.codec import read_grid, read_quality

    if r.model.jpeg_quality >= 0:
        return r.model.jpeg_quality
    reading = read_quality(lr_set.images)
    grid = read_grid(lr_set.images) if r.model.grid_quality and not reading.quality else None
    quality = reading.quality or (r.model.grid_quality if grid is not None and grid.period else 0)
    if say:
        then = "G ends in JPEG at it" if reading.quality else "G's JPEG stage is off"
        if grid is not None:
            then = f"{grid.describe()}: " + (f"G ends in JPEG at q{quality}, standing in for that codec" if quality else then)
        print(f"real LR: {reading.describe()}; {then}", file=sys.stderr, flush=True)
    return quality


def grain_for(r: Recipe, hr_set, lr_set, say: bool, resume_from: Path | None = None) -> bool:
    """False where ``model.grain_check`` finds that the real LR carry no grain (see :mod:`dsgan_cli.method.grain`):
    G then gets no output noise and no noise level is matched; ``say`` prints what was found. The same on every
    rank: all read the same images. A resume keeps what its checkpoint's G has (also one made before the check)."""
    from ..method.grain import read_grain
    from .rundir import stored_generator_config

    if not (r.model.output_noise and r.model.grain_check):
        return True
    stored = stored_generator_config(resume_from) if resume_from is not None else None
    if stored is not None:
        if say:
            print(f"real LR: grain {'kept' if stored.output_noise else 'left out'}, as the checkpoint's G", file=sys.stderr, flush=True)
        return stored.output_noise
    reading = read_grain(hr_set.images, lr_set.images, r.data.scale)
    if say:
        then = "G adds grain" if reading.carries else "G adds none (no output noise, no noise-level term)"
        print(f"real LR: {reading.describe()}; {then}", file=sys.stderr, flush=True)
    return reading.carries


def blur_for(r: Recipe, hr_set, lr_set, say: bool, resume_from: Path | None = None, grain: bool = False):
    """G's blur with ``model.blur_source = "read"``: the reading of the real LR (a Gaussian, perhaps along a motion
    blur's line; see :mod:`dsgan_cli.method.blur_reading`), or None (not read: G's blur stays at its sharp start;
    without the option the GAN sets it); ``say`` prints what was found (``grain``: G adds grain, see
    :func:`build_networks`). The same on every rank: all read the same images. A resume keeps the checkpoint's
    kernel."""
    from ..method.blur_reading import read_blur

    if not (r.model.blur_kernel and r.model.blur_source == "read") or resume_from is not None:
        return None
    reading = read_blur(hr_set.images, lr_set.images, r.data.scale, r.model.blur_kernel)
    if say:
        then = "G blurs by it (fixed)" if reading.cov is not None else "G's blur stays at its sharp start (fixed)"
        if reading.sharp:
            then = "narrower than G's sharpest blur: G does not blur (fixed)"
            if grain:
                then = "narrower than G's sharpest blur, but grain makes a reading short: G keeps its sharpest blur (fixed)"
        print(f"real LR: {reading.describe()}; {then}", file=sys.stderr, flush=True)
    return reading if reading.cov is not None else None


class RealLR(NamedTuple):
    """What is read off the real LR before training: G's JPEG quality, whether G adds grain, its blur."""

    jpeg_quality: int
    grain: bool
    blur: BlurReading | None


def read_real_lr(r: Recipe, hr_set, lr_set, say: bool, resume_from: Path | None = None) -> RealLR:
    """The three readings of the real LR (:func:`jpeg_quality_for`, :func:`grain_for`, :func:`blur_for`)."""
    quality, grain = jpeg_quality_for(r, lr_set, say), grain_for(r, hr_set, lr_set, say, resume_from)
    return RealLR(quality, grain, blur_for(r, hr_set, lr_set, say, resume_from, generator_config(r, quality, grain).output_noise))


def generator_config(r: Recipe, jpeg_quality: int = 0, grain: bool = True):
    """The recipe's generator, as the :class:`~dsgan_cli.method.models.GeneratorConfig` its files will carry;
    without ``grain`` (see :func:`grain_for`) it has no output noise, nor the noise's options."""
    from ..method.models import GeneratorConfig

    m = r.model
    noise = m.output_noise and grain
    return GeneratorConfig(
        n_res_blocks=m.n_res_blocks,
        channels=m.channels,
        padding=m.padding,
        output=m.output,
        output_noise=noise,
        noise_init=float(m.noise_init),
        jpeg_quality=jpeg_quality,
        blur_kernel=m.blur_kernel,
        noise_mix=m.noise_mix and noise,
        noise_kernel=m.noise_kernel if noise else 0,
    )


def discriminator_config(r: Recipe):
    """The recipe's discriminator as a :class:`~dsgan_cli.method.models.DiscriminatorConfig`."""
    from ..method.models import DiscriminatorConfig

    m = r.model
    return DiscriminatorConfig(filter_kernel=m.filter_kernel, gaussian=m.filter == "gaussian", norm=m.d_norm)


def build_networks(
    r: Recipe,
    device: torch.device,
    fmts: dict[str, torch.memory_format],
    jpeg_quality: int = 0,
    grain: bool = True,
    blur: BlurReading | None = None,
):
    """G, D, the generator loss (with its perceptual network or None) and the two Adam optimisers, each
    network in its layout from ``fmts`` (see :func:`memory_formats_for`); G ends in JPEG at ``jpeg_quality``
    (0: none; see :func:`jpeg_quality_for`); without ``grain`` (see :func:`grain_for`) G adds none and no
    noise level is matched; with ``model.blur_source = "read"`` G's blur is the reading ``blur``
    (None: its sharp start, as on a resume, whose checkpoint brings the kernel; see :func:`blur_for`), fixed: no
    blur where the reading is narrower than the sharp start, unless G adds grain (grain makes a reading short, so
    under it a narrow reading does not show that there is no blur; G keeps its sharp start)."""
    from ..method import losses, models

    G = models.Generator(generator_config(r, jpeg_quality, grain))
    if G.blur is not None and r.model.blur_source == "read":
        if blur is not None:
            G.blur.start_at(blur.cov, blur.centres(), identity=not G.output_noise)
        # The GAN moved a read blur further (over-blurring, BENCHMARKS.md "The read blur"); the parameter stays in
        # the optimiser (no gradient, no step), so checkpoints of either source resume alike.
        G.blur.logits.requires_grad_(False)
    G = G.to(memory_format=fmts["G"])
    D = models.Discriminator(discriminator_config(r)).to(memory_format=fmts["D"])
    perceptual = losses.build_perceptual(r.perceptual.net, r.perceptual.layers, r.perceptual.weights) if r.loss.w_perceptual > 0 else None
    weights = losses.LossWeights(
        w_color=r.loss.w_color,
        w_gan=r.loss.w_gan,
        w_perceptual=r.loss.w_perceptual,
        w_added_detail=r.loss.w_added_detail,
        w_noise_level=r.loss.w_noise_level if grain else 0.0,
        content_without_noise=r.loss.content_without_noise,
    )
    g_loss_fn = losses.GeneratorLoss(weights, perceptual, kernel_size=r.model.filter_kernel, gaussian=r.model.filter == "gaussian")
    g_loss_fn = g_loss_fn.to(device, memory_format=fmts["P"])
    if r.train.compile:  # in place: parameter names, checkpoints and DDP wrapping stay as without
        for net in (G, D, *([perceptual] if perceptual is not None else [])):
            net.compile()
    betas = (r.optim.beta1, r.optim.beta2)
    # G's global structure (the kernels' logits, the grain's grey share) is a few logits a long way from where they
    # start, and Adam moves each by about its learning rate per step: their own rate (lr_scale, kept by set_lr)
    # lets a short run reach them.
    is_structure = lambda name: name.startswith(("blur.", "grain.")) or name == "noise_grey"  # noqa: E731
    structure = [p for n, p in G.named_parameters() if is_structure(n)]
    rest = [p for n, p in G.named_parameters() if not is_structure(n)]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if structure:
        groups.append({"params": structure, "lr_scale": r.optim.structure_lr / r.optim.lr})
    opt_g = torch.optim.Adam([{**g, "lr": r.optim.lr * g["lr_scale"]} for g in groups], lr=r.optim.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=r.optim.lr, betas=betas)
    return G, D, g_loss_fn, opt_g, opt_d


def loader_workers(asked: int) -> int:
    """DataLoader workers: as many as asked, but no more than the CPUs this process may use (torch warns, twice,
    and the extra workers only compete for the same cores)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(asked, cpus)


def set_lr(optimisers, lr: float) -> None:
    """Set the learning rate of every parameter group (times its ``lr_scale``, where it has one)."""
    for opt in optimisers:
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)


@dataclass
class StepInputs:
    """One optimiser step's micro-batches: Xb and real LR per micro-batch, and where their images lie on G's JPEG
    block grid (None: G draws a random phase per crop)."""

    xbs: list[torch.Tensor]
    reals: list[torch.Tensor]
    origin: tuple[int, int] | None = None


@dataclass(frozen=True)
class StepMode:
    """How the two steps run: ``keep_graph`` keeps the D step's G graph for the G step (no accumulation)."""

    keep_graph: bool = True


def next_inputs(batches, accum: int, device: torch.device, scale: int, fmts: dict[str, torch.memory_format], origin=None) -> StepInputs:
    """``accum`` micro-batches of (Xb, real LR): uint8 from the workers -> Xb = bicubic downscale, on the device,
    in G's and D's layouts; ``origin``: where the images lie on G's JPEG block grid (None: a random phase)."""
    from ..method.models import downscale

    xbs, reals = [], []
    for _ in range(accum):
        hr_u8, lr_u8 = next(batches)
        hr = hr_u8.to(device, non_blocking=True).float().div_(255)
        xbs.append(downscale(hr, scale).contiguous(memory_format=fmts["G"]))
        reals.append(lr_u8.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=fmts["D"]))
    return StepInputs(xbs, reals, origin)


def run_g(G, xb, origin: tuple[int, int] | None):
    """(Xd, Xd without its output noise, the content reference: Xb, or Xb through G's learned blur)."""
    return G(xb, with_deterministic=True, origin=origin)


def discriminator_step(accelerator, G, D, opt_d, batch: StepInputs, mode: StepMode = StepMode()):
    """One D update, real LR -> 1 and detached Xd = G(Xb) -> 0; returns ((Xd, deterministic Xd, reference) per micro-batch,
    D stats on the device).

    With accumulation (``keep_graph`` False) G runs without a graph here and again in the G step, so that
    only one micro-batch graph is alive at a time.
    """
    from ..method import losses

    xbs, reals = batch.xbs, batch.reals
    accum = len(xbs)
    opt_d.zero_grad(set_to_none=True)
    xds, loss_d, d_real, d_fake = [], 0.0, 0.0, 0.0
    for m in range(accum):
        sync = contextlib.nullcontext() if m == accum - 1 else accelerator.no_sync(D)
        with sync, accelerator.autocast():
            with torch.set_grad_enabled(mode.keep_graph):
                xd, xd_det, ref = run_g(G, xbs[m], batch.origin)
            real_logits, fake_logits = D(reals[m]), D(xd.detach())
            loss_d_m = losses.gan_loss_discriminator(real_logits, fake_logits) / accum
        accelerator.backward(loss_d_m)
        xds.append((xd, xd_det, ref))
        loss_d = loss_d + loss_d_m.detach()
        d_real = d_real + torch.sigmoid(real_logits.detach().float()).mean() / accum
        d_fake = d_fake + torch.sigmoid(fake_logits.detach().float()).mean() / accum
    opt_d.step()
    return xds, {"loss_d": loss_d, "d_real": d_real, "d_fake": d_fake}


def generator_step(accelerator, G, D_plain, opt_g, g_loss_fn, batch: StepInputs, xds, mode: StepMode = StepMode()) -> dict:
    """One G update against the updated, frozen D: colour + GAN + perceptual (features of Xb without grad)
    + added detail (of the deterministic Xd, when asked)."""
    xbs, reals = batch.xbs, batch.reals
    accum, perceptual = len(xbs), g_loss_fn.perceptual
    D_plain.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    loss_g, parts_sum = 0.0, {}
    for m in range(accum):
        sync = contextlib.nullcontext() if m == accum - 1 else accelerator.no_sync(G)
        with sync, accelerator.autocast():
            xd, xd_det, ref = xds[m] if mode.keep_graph else run_g(G, xbs[m], batch.origin)
            with torch.no_grad():
                ref_feats = perceptual.features(ref) if perceptual is not None else None
            loss_g_m, parts = g_loss_fn(xd, ref, D_plain(xd), ref_feats, xd_det, reals[m])
            loss_g_m = loss_g_m / accum
        accelerator.backward(loss_g_m)
        loss_g = loss_g + loss_g_m.detach()
        for k, v in parts.items():
            parts_sum[f"loss_{k}"] = parts_sum.get(f"loss_{k}", 0.0) + v.detach() / accum
    D_plain.requires_grad_(True)
    opt_g.step()
    return {"loss_g": loss_g, **parts_sum}


def make_ema(G, decay: float):
    """The moving average of G's weights (torch's AveragedModel), or None when ``decay`` is 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def data_counts(hr_set, lr_set) -> dict:
    """Image counts for the checkpoint state; warns about skipped images."""
    if hr_set.skipped or lr_set.skipped:
        print(f"warning: skipped {len(hr_set.skipped)} HR and {len(lr_set.skipped)} real LR unreadable images", file=sys.stderr)
    return {
        "hr": len(hr_set.paths),
        "lr": len(lr_set.paths),
        "hr_skipped": len(hr_set.skipped),
        "lr_skipped": len(lr_set.skipped),
        "hr_resized": hr_set.resized,
        "lr_resized": lr_set.resized,
    }


# ----------------------------------------------------------------------------- the training loop


def training_batches(r: Recipe, hr_set, lr_set, accelerator, start_step: int, jpeg_quality: int = 0):
    """The iterator of this rank's micro-batches from ``start_step`` on: micro-batch m is a function of
    (seed, m, rank), so a resume continues the same stream; and where the images lie on G's JPEG block grid:
    whole images through a JPEG stage at (0, 0), as the real LR's; crops leave G to draw a random phase (None)."""
    from ..data.sampling import Crops, MicroBatches, make_loader

    accum = r.train.grad_accum
    dataset = MicroBatches(
        hr_set.images,
        lr_set.images,
        batch_size=r.train.batch_size,
        seed=r.train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        crops=Crops(scale=r.data.scale, crop_size=r.data.crop_size, flip=r.data.flip),
    )
    loader = make_loader(
        dataset, start_step * accum, r.train.iterations * accum, loader_workers(r.data.num_workers), accelerator.device.type == "cuda"
    )
    return iter(loader), ((0, 0) if jpeg_quality and not r.data.crop_size else None)


def ema_and_export(accelerator, G, r: Recipe):
    """(the moving average of G or None, the network samples and generator.safetensors show)."""
    G_ema = make_ema(accelerator.unwrap_model(G), r.optim.ema)  # identical on every rank, as G is
    if G_ema is not None:
        accelerator.register_for_checkpointing(G_ema)  # saved and restored with the rest: resume stays exact
    return G_ema, (G if G_ema is None else G_ema.module)


def train(
    recipe: Recipe, resume: str | None = None, progress: bool = True, max_minutes: float | None = None, resume_command: str | None = None
) -> TrainResult:
    """Train DSGAN as the recipe says; ``resume`` is None, "latest" or a checkpoint folder.

    ``max_minutes`` and, given ``resume_command`` (printed), SIGINT and SIGTERM (see :mod:`.interrupt`) end the
    run early with a checkpoint; ``--resume latest`` continues it where it stopped.
    """
    from accelerate import PartialState
    from accelerate.utils import set_seed

    r = recipe
    out = Path(r.train.output_dir)
    iters, accum, scale = r.train.iterations, r.train.grad_accum, r.data.scale
    dist_state = PartialState(cpu=cpu_processes())
    is_main = dist_state.is_main_process
    resume_from = resolve_resume(resume, out)
    start_step = read_state(resume_from)["step"] if resume_from else 0
    if start_step >= iters:
        raise file_error(resume_from, f"already at step {start_step} >= train.iterations ({iters}); raise train.iterations to train on")
    show = progress and is_main and sys.stderr.isatty()

    # --- data: decoded once into a memory-mapped cache shared by every process (before anything is written);
    #     micro-batch m is a function of (seed, m, rank)
    hr_set, lr_set = load_data(r, show=show, writer=dist_state.is_local_main_process)
    # Samples written into a data folder would be read back as training images.
    check_output_dir(r.data.hr_dir, out)
    check_output_dir(r.data.lr_dir, out)
    digest = start_run(out, resume, resume_from, start_step, r, hr_set, lr_set, dist_state.num_processes) if is_main else None
    accelerator = build_accelerator(r, out, start_step, is_main)
    device = accelerator.device
    fmts = memory_formats_for(device, r.train.memory_format, r.train.compile)
    set_seed(r.train.seed)  # identical initial weights on every rank
    found = read_real_lr(r, hr_set, lr_set, is_main, resume_from)
    batches, origin = training_batches(r, hr_set, lr_set, accelerator, start_step, found.jpeg_quality)

    # --- models, losses, optimisers (prepared once)
    G, D, g_loss_fn, opt_g, opt_d = build_networks(r, device, fmts, *found)
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)
    D_plain = accelerator.unwrap_model(D)  # used (frozen) in the G step: no DDP gradient sync for D there
    G_ema, G_out = ema_and_export(accelerator, G, r)
    if resume_from is not None:
        load_resume(accelerator, resume_from, r, start_step, accelerator.unwrap_model(G).config)
    tuned = tune_device(device)

    # --- outputs: recipe copy, trackers, a fixed sample batch for the grids
    if is_main and (resume_from is None or not (out / "recipe.json").is_file()):  # a resume keeps the first recipe
        write_bytes_atomic(out / "recipe.json", json.dumps(r.to_dict(), indent=2).encode())
    accelerator.init_trackers("dsgan")
    sample_xb, sample_real = sample_batch(hr_set, lr_set, scale, device)
    counts = data_counts(hr_set, lr_set) if is_main else {}

    # With accumulation, G(Xb) is recomputed in the G step (one graph alive at a time).
    mode = StepMode(keep_graph=accum == 1)
    last_ckpt, losses = resume_from, {}
    checks = RankCheck(accelerator, start_step, iters, max_minutes)
    timing = RunTiming(accelerator, r, start_step, iters, tuned) if is_main and progress else None
    stop = StopOnSignal(accelerator, say=is_main, resume=resume_command, active=resume_command is not None)
    with stop, progress_bar(progress and is_main, unit="it", fields=("losses",)) as bar:
        task = bar.add_task("train", total=iters, completed=start_step, losses="")
        for step in range(start_step, iters):
            set_lr((opt_g, opt_d), lr_at(step, r))
            # 1. inputs  2. D step: real LR -> 1, G(Xb) -> 0  3. G step against the updated, frozen D
            batch = next_inputs(batches, accum, device, scale, fmts, origin)
            xds, d_stats = discriminator_step(accelerator, G, D, opt_d, batch, mode)
            g_stats = generator_step(accelerator, G, D_plain, opt_g, g_loss_fn, batch, xds, mode)
            if G_ema is not None:
                G_ema.update_parameters(accelerator.unwrap_model(G))
            done = step + 1

            # 4. all ranks agree on a stop signal (each step), finite losses and the time limit (host syncs: only here)
            signalled = stop.agreed()
            stats = {"loss_d": d_stats["loss_d"], **g_stats, "d_real": d_stats["d_real"], "d_fake": d_stats["d_fake"]}
            checks.record(stats)
            stop_early = False
            if signalled or checks.due(done, (r.train.log_every, r.train.checkpoint_every)):
                losses, stop_early = checks.check(done, stats, last_ckpt, signalled)

            # 5. log, samples, checkpoint
            elapsed = time.perf_counter() - checks.t_start
            last = done == iters or stop_early
            if done % r.train.log_every == 0 or last or step == start_step:
                accelerator.log({**losses, "lr": lr_at(step, r), "time_s": round(elapsed, 3)}, step=done)
            if is_main and (done % r.train.sample_every == 0 or last):
                save_samples(accelerator, G_out, out / "samples" / f"step_{done:08d}.png", sample_xb, sample_real, r)
            if done % r.train.checkpoint_every == 0 or last:
                state = checkpoint_state(done, r, accelerator.num_processes, counts, digest)
                last_ckpt = save_checkpoint(accelerator, out, done, G_out, r, state)
            bar.update(task, completed=done, losses=f"G {losses['loss_g']:.4f} D {losses['loss_d']:.4f}" if losses else "")
            if timing is not None:
                timing.step(done)
            if stop_early:
                break

    accelerator.end_training()
    stopped_by = stop.signum if signalled and done < iters else None  # as agreed: the same on every rank
    if is_main:
        unlock_run_folder(out)
        print_summary(out, start_step, done, iters, max_minutes, last_ckpt, stopped_by, resume_command)
    return TrainResult(out, out / "generator.safetensors", last_ckpt, done, losses, stopped_by)
