"""Training speed on the current device: steps/s, images/s and where a step's time goes.

    .venv/bin/python scripts/bench_train.py --batch 8 --size 128            # CPU: slow, keep --steps small
    .venv/bin/python scripts/bench_train.py --batch 16 --size 128 --steps 20 --precision bf16   # GPU
    .venv/bin/python scripts/bench_train.py --vs-original --steps 2    # ours vs the original implementation's step
    .venv/bin/python scripts/bench_train.py --profile 25 --variants G=cl,D=cl --malloc keep   # where a step's time goes

Runs the training step of ``dsgan_cli.engines.train`` (same models, losses, data
sampler, D step then G step) on in-memory images, with a timer around each
phase, once per memory layout (channels_last and NCHW)
and per perceptual network (``--nets vgg19,lpips-alex``), and prints a table
plus JSON (``--json PATH`` to write it to a file as well). Phases:

- data: micro-batch from the sampler (indexing, crops/flips) + to device + bicubic Xb
- g_forward: Xd = G(Xb)
- d_step: D on real LR and on detached Xd, loss, backward, Adam
- perceptual_fwd: VGG19 or LPIPS-AlexNet features of Xb (no grad) and of Xd, distance
- g_loss_fwd: colour loss and D(Xd) for the GAN loss
- g_backward_step: backward through D (input gradients), VGG and G, then Adam

``--vs-original`` times our step and a minimal port of the original
implementation's step (see :func:`original_step`; LPIPS-AlexNet with a random
backbone, from the ``lpips`` package when installed) alternately in one run,
and prints the ratio, the FLOPs per step (torch's FlopCounterMode) and the
fraction of the CPU's nominal fp32 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchio import emit_json  # noqa: E402  (scripts/ is on sys.path when a script runs)

from dsgan_cli.data.sampling import Crops, MicroBatches  # noqa: E402
from dsgan_cli.method.losses import ColorLoss, build_perceptual, gan_loss_discriminator, gan_loss_generator  # noqa: E402
from dsgan_cli.method.models import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, downscale  # noqa: E402
from dsgan_cli.method.recipe import load_recipe  # noqa: E402
from dsgan_cli.plumbing.allocator import keep_freed_memory  # noqa: E402

PHASES = ["data", "g_forward", "d_step", "perceptual_fwd", "g_loss_fwd", "g_backward_step"]


def run_layout(
    recipe,
    layout: str,
    batch: int,
    size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str,
    perceptual_weights: str,
    net: str = "vgg19",
) -> dict:
    """Time ``warmup + steps`` training steps in one memory layout; returns per-phase seconds per step."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    scale = recipe.data.scale
    g = torch.Generator().manual_seed(0)
    hr_u8 = torch.randint(0, 256, (32, 3, size * scale, size * scale), dtype=torch.uint8, generator=g)
    lr_u8 = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=g)
    data = MicroBatches(hr_u8, lr_u8, batch_size=batch, seed=0, crops=Crops(scale=scale, flip=True))

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(recipe.model.n_res_blocks, recipe.model.channels)).to(device, memory_format=fmt)
    D = Discriminator(DiscriminatorConfig(filter_kernel=recipe.model.filter_kernel)).to(device, memory_format=fmt)
    perceptual = build_perceptual(net, recipe.perceptual.layers, perceptual_weights).to(device, memory_format=fmt)
    color = ColorLoss(recipe.model.filter_kernel).to(device)
    betas = (recipe.optim.beta1, recipe.optim.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=recipe.optim.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe.optim.lr, betas=betas)
    w = recipe.loss
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    totals = {p: 0.0 for p in PHASES}
    for step in range(warmup + steps):
        t = {}
        sync()
        t0 = time.perf_counter()
        hr, real = data[step]
        xb = downscale(hr.to(device).float().div_(255), scale).contiguous(memory_format=fmt)
        real = real.to(device).float().div_(255).contiguous(memory_format=fmt)
        sync()
        t["data"] = time.perf_counter()
        with autocast():
            xd = G(xb)
        sync()
        t["g_forward"] = time.perf_counter()
        opt_d.zero_grad(set_to_none=True)
        with autocast():
            loss_d = gan_loss_discriminator(D(real), D(xd.detach()))
        loss_d.backward()
        opt_d.step()
        sync()
        t["d_step"] = time.perf_counter()
        D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with autocast():
            with torch.no_grad():
                xb_feats = perceptual.features(xb)
            loss_p = perceptual(xd, y_feats=xb_feats)
        sync()
        t["perceptual_fwd"] = time.perf_counter()
        with autocast():
            loss_g = w.w_color * color(xd, xb) + w.w_gan * gan_loss_generator(D(xd)) + w.w_perceptual * loss_p
        sync()
        t["g_loss_fwd"] = time.perf_counter()
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        sync()
        t["g_backward_step"] = time.perf_counter()
        if step >= warmup:
            prev = t0
            for p in PHASES:
                totals[p] += t[p] - prev
                prev = t[p]
        print(
            f"  {net} {layout}: step {step + 1}/{warmup + steps} {t['g_backward_step'] - t0:.2f}s{' (warm-up)' if step < warmup else ''}",
            file=sys.stderr,
            flush=True,
        )
    per_step = {p: totals[p] / steps for p in PHASES}
    step_s = sum(per_step.values())
    return {
        "net": net,
        "layout": layout,
        "seconds_per_step": step_s,
        "steps_per_s": 1 / step_s,
        "images_per_s": batch / step_s,
        "phases_s": per_step,
    }


# ----------------------------------------------------------------------------- --vs-original


class FormatIn(torch.nn.Module):
    """Runs ``module`` with its input converted to ``fmt`` (to choose the memory format per module)."""

    def __init__(self, module: torch.nn.Module, fmt: torch.memory_format):
        super().__init__()
        self.module, self.fmt = module.to(memory_format=fmt), fmt

    def forward(self, x: torch.Tensor):
        return self.module(x.contiguous(memory_format=self.fmt))


def parse_variant(spec: str) -> tuple[dict[str, torch.memory_format], set[str]]:
    """'nchw', 'cl' or per module 'G=cl,D=nchw,P=nchw' (P = perceptual network), optionally followed by
    '+compile' (torch.compile) and/or '+bf16' (bf16 autocast) -> (formats per module, options)."""
    spec, *opts = spec.split("+")
    if set(opts) - {"compile", "bf16"}:
        raise SystemExit(f"unknown variant option in {spec!r}: only +compile and +bf16")
    fmts = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
    if spec in fmts:
        return {m: fmts[spec] for m in "GDP"}, set(opts)
    out = {m: torch.contiguous_format for m in "GDP"}
    for part in spec.split(","):
        m, f = part.split("=")
        out[m] = fmts[f]
    return out, set(opts)


def batch_maker(recipe, batch: int, size: int, device: torch.device):
    """Micro-batch ``i`` as (Xb, real LR) float tensors on the device, from the real sampler."""
    g = torch.Generator().manual_seed(0)
    s = recipe.data.scale
    data = MicroBatches(
        torch.randint(0, 256, (32, 3, size * s, size * s), dtype=torch.uint8, generator=g),
        torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=g),
        batch_size=batch,
        seed=0,
        crops=Crops(scale=s),
    )

    def get(i: int):
        hr, real = data[i]
        return downscale(hr.to(device).float().div_(255), s), real.to(device).float().div_(255)

    return get


def ours_step(recipe, device: torch.device, variant: str, perceptual_weights: str):
    """One training step through dsgan_cli.engines.train's own D-step and G-step functions (accumulation 1);
    ``variant`` picks the memory format per module, torch.compile and bf16 autocast (see parse_variant)."""
    from accelerate import Accelerator

    from dsgan_cli.engines.train import StepInputs, build_networks, discriminator_step, generator_step

    fmts, opts = parse_variant(variant)
    r = dataclasses.replace(
        recipe,
        perceptual=dataclasses.replace(recipe.perceptual, weights=perceptual_weights),
        train=dataclasses.replace(recipe.train, compile="compile" in opts),
    )
    # Autocast around the step: one process holds one Accelerator state, so its mixed_precision can't vary per variant.
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if "bf16" in opts else contextlib.nullcontext
    accelerator = Accelerator(cpu=device.type == "cpu")
    torch.manual_seed(0)
    G, D, g_loss_fn, opt_g, opt_d = build_networks(r, device, dict.fromkeys("GDP", torch.contiguous_format))
    G, D = FormatIn(G, fmts["G"]), FormatIn(D, fmts["D"])
    if g_loss_fn.perceptual is not None and hasattr(g_loss_fn.perceptual, "vgg"):
        g_loss_fn.perceptual.vgg = FormatIn(g_loss_fn.perceptual.vgg, fmts["P"])
    G, D, opt_g, opt_d = accelerator.prepare(G, D, opt_g, opt_d)

    def step(xb: torch.Tensor, real: torch.Tensor) -> None:
        with autocast():
            batch = StepInputs([xb], [real])
            xds, _ = discriminator_step(accelerator, G, D, opt_d, batch)
            generator_step(accelerator, G, D, opt_g, g_loss_fn, batch, xds)

    return step


def lpips_alex():
    """LPIPS-AlexNet with a random backbone (timing only): the ``lpips`` package when installed, else
    torchvision's AlexNet features with unit channel weights (same convolutions, no learned 1x1 heads)."""
    try:
        import lpips

        net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        return (lambda x, y: net(x, y, normalize=True).mean()), "lpips package, AlexNet, random backbone"
    except ImportError:
        from torchvision.models import alexnet

        feats = alexnet(weights=None).features.eval()
        cuts = [2, 5, 8, 10, 12]  # after each ReLU, as LPIPS taps AlexNet

        def dist(x, y):
            total, a, b, prev = 0.0, x * 2 - 1, y * 2 - 1, 0
            for c in cuts:
                a, b = feats[prev:c](a), feats[prev:c](b)
                na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + (na - nb).pow(2).sum(1).mean()
                prev = c
            return total

        return dist, "torchvision AlexNet features, random weights (lpips package not installed)"


def original_step(recipe, device: torch.device):
    """The original implementation's step, minimally ported to current PyTorch: G(Xb); D(real), D(fake)
    (not detached); D loss, backward keeping the graph, D step; then the G loss on D(fake) recomputed
    (the D step changed D's weights in place) plus colour and LPIPS-AlexNet, backward, G step. NCHW."""
    r = recipe
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(r.model.n_res_blocks, r.model.channels)).to(device)
    D = Discriminator(DiscriminatorConfig(filter_kernel=r.model.filter_kernel)).to(device)
    color = ColorLoss(r.model.filter_kernel).to(device)
    lpips_fn, lpips_kind = lpips_alex()
    betas = (r.optim.beta1, r.optim.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=r.optim.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=r.optim.lr, betas=betas)
    w = r.loss

    def step(xb: torch.Tensor, real: torch.Tensor) -> None:
        xd = G(xb)
        real_tex, fake_tex = D(real), D(xd)
        D.zero_grad()
        loss_d = gan_loss_discriminator(real_tex, fake_tex)
        loss_d.backward(retain_graph=True)
        opt_d.step()
        G.zero_grad()
        loss_g = w.w_color * color(xd, xb) + w.w_gan * gan_loss_generator(D(xd)) + w.w_perceptual * lpips_fn(xd, xb)
        loss_g.backward()
        opt_g.step()

    return step, lpips_kind


def fp32_flops_per_cycle(cpuinfo: str) -> tuple[int, str]:
    """fp32 FLOP per cycle and core from /proc/cpuinfo's vendor, family and flags: 2 FMA pipes x lanes x 2.

    AVX-512 cores with full-width units (AMD Zen 5, family 26; Intel Xeon server cores) do 2 x 16 x 2 = 64;
    AMD Zen 4 (family 25) runs AVX-512 on 256-bit units, like AVX2 cores: 2 x 8 x 2 = 32; without FMA, 16."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vendor, family = fields.get("vendor_id", ""), int(fields.get("cpu family", "0") or 0)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family < 26):
        return 64, f"{vendor} family {family}, AVX-512 on full-width units: 2 FMA x 16 lanes x 2"
    if "fma" in flags:
        return 32, f"{vendor} family {family}, 256-bit FMA: 2 FMA x 8 lanes x 2"
    return 16, f"{vendor} family {family}, no FMA: 16"


def peak_gflops(threads: int, clock_ghz: float | None = None) -> tuple[float, str]:
    """Nominal fp32 peak of this CPU: threads x clock x FLOP/cycle (:func:`fp32_flops_per_cycle`).

    The clock is /proc/cpuinfo's unless ``clock_ghz`` is given; in a VM that is often the base clock,
    and cores that boost above it can exceed this "peak"."""
    mhz = 1000 * clock_ghz if clock_ghz else 0.0
    if not mhz:
        with contextlib.suppress(OSError, ValueError):
            mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz"))
    source = "given" if clock_ghz else "/proc/cpuinfo"
    try:
        per_cycle, why = fp32_flops_per_cycle(Path("/proc/cpuinfo").read_text())
    except OSError:
        per_cycle, why = 32, "unknown CPU: assumed 2 x 256-bit FMA"
    return (threads * mhz / 1000 * per_cycle, f"{threads} threads x {mhz:.0f} MHz ({source}) x {per_cycle} FLOP/cycle ({why})")


def count_flops(step, xb, real) -> int:
    """FLOPs of one call of ``step`` (forward and backward convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(xb, real)
    return counter.get_total_flops()


def vs_original(args, recipe, device: torch.device) -> dict:
    """Time our step (one entry per memory-format variant) and the original's, interleaved step by step."""
    get = batch_maker(recipe, args.batch, args.size, device)
    orig, lpips_kind = original_step(recipe, device)
    runs = {"original": orig}
    for v in args.variants.split(";"):
        runs[f"ours[{v}]"] = ours_step(recipe, device, v, args.perceptual_weights)
    times = {k: [] for k in runs}
    for i in range(args.warmup + args.steps):
        xb, real = get(i)
        # Interleaved, so every variant sees the same machine load; the order flips every step so
        # that none always pays the process's first-step costs or runs right after another.
        for name, step in list(runs.items()) if i % 2 == 0 else list(runs.items())[::-1]:
            t0 = time.perf_counter()
            step(xb, real)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
            print(f"  {name}: step {i + 1}/{args.warmup + args.steps} {time.perf_counter() - t0:.2f}s", file=sys.stderr, flush=True)
    xb, real = get(0)
    # FLOPs are linear in the batch: count one image's step (cheap) and scale.
    flops = {k: count_flops(s, xb[:1], real[:1]) * len(xb) for k, s in list(runs.items())[:2]}
    per_step = {k: sum(v) / len(v) for k, v in times.items()}
    peak, peak_how = peak_gflops(torch.get_num_threads(), args.clock_ghz)
    ours_name = list(runs)[1]
    return {
        "lpips": lpips_kind,
        "seconds_per_step": per_step,
        "step_times": times,
        "ratio_original_over_ours": {k: per_step["original"] / v for k, v in per_step.items() if k != "original"},
        "flops_per_step": {"original": flops["original"], "ours": flops[ours_name]},
        "achieved_gflops": {k: flops["original" if k == "original" else ours_name] / v / 1e9 for k, v in per_step.items()},
        "peak_gflops": peak,
        "peak_assumption": peak_how,
        "fraction_of_peak": {
            k: flops["original" if k == "original" else ours_name] / v / 1e9 / peak if peak else None for k, v in per_step.items()
        },
    }


def profile_step(args, recipe, device: torch.device) -> dict:
    """Where one step of ours (the first ``--variants`` entry) spends its time: torch profiler, ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    get = batch_maker(recipe, args.batch, args.size, device)
    step = ours_step(recipe, device, args.variants.split(";")[0], args.perceptual_weights)
    for i in range(args.warmup):
        step(*get(i))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(*get(args.warmup))
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    rows = [
        {
            "op": e.key,
            "shapes": str(e.input_shapes)[:120],
            "calls": e.count,
            "self_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total,
        }
        for e in ops[: args.profile]
    ]
    by_kind: dict[str, float] = {}
    for e in ops:
        kind = "convolution" if "conv" in e.key else "other"
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_cpu_time_total / total
    return {"variant": args.variants.split(";")[0], "step_s": total / 1e6, "top_ops": rows, "share_by_kind": by_kind}


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="paper", help="built-in recipe name (idphoto, paper) or a recipe TOML file")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128, help="LR side (Xb, Xd, real LR); HR is size x data.scale")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per layout")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--layouts", default="channels_last,contiguous")
    ap.add_argument("--precision", default="no", choices=("no", "bf16", "fp16"))
    ap.add_argument("--nets", default="vgg19,lpips-alex", help="perceptual networks to time (perceptual.net values)")
    ap.add_argument("--perceptual-weights", default="random", help="'random' keeps the benchmark offline (same cost)")
    ap.add_argument("--json", type=Path, help="also write the JSON result here")
    ap.add_argument("--clock-ghz", type=float, help="CPU clock for the nominal peak (default: /proc/cpuinfo's)")
    ap.add_argument(
        "--vs-original", action="store_true", help="time our step against the original implementation's step (minimal port), interleaved"
    )
    ap.add_argument(
        "--variants",
        default="nchw",
        help="with --vs-original: our variants, ';'-separated: nchw, cl, or e.g. G=cl,D=nchw,P=nchw, "
        "each optionally with +compile (torch.compile) and/or +bf16 (bf16 autocast)",
    )
    ap.add_argument(
        "--malloc",
        default="default",
        choices=("default", "keep"),
        help="'keep': the allocator setting `dsgan train` makes on a CPU (dsgan_cli/plumbing/allocator.py), for "
        "the whole process, so for the original's step too; compare two runs for its own effect",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile one step of ours (first --variants entry) and print its N costliest ops",
    )
    args = ap.parse_args()

    malloc = keep_freed_memory() if args.malloc == "keep" else "default"
    recipe = load_recipe(args.recipe)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.profile:
        report = {
            "device": device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": args.batch,
            "lr_size": args.size,
            "malloc": malloc,
            **profile_step(args, recipe, device),
        }
        print(f"{'op':<34}{'calls':>6}{'self s':>9}{'share':>8}  input shapes")
        for r in report["top_ops"]:
            print(f"{r['op']:<34}{r['calls']:>6}{r['self_s']:>9.3f}{100 * r['share']:>7.1f}%  {r['shapes']}")
        print(f"step {report['step_s']:.2f} s (profiled); " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in report["share_by_kind"].items()))
        emit_json(report, args.json)
        return
    if args.vs_original:
        report = {
            "device": device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "recipe": str(args.recipe),
            "batch": args.batch,
            "lr_size": args.size,
            "precision": "fp32 unless a variant says +bf16",
            "steps": args.steps,
            "warmup": args.warmup,
            "malloc": malloc,
            **vs_original(args, recipe, device),
        }
        for k, v in report["ratio_original_over_ours"].items():
            print(
                f"{k}: {report['seconds_per_step'][k]:.2f} s/step; original {report['seconds_per_step']['original']:.2f} s/step; "
                f"original/ours = {v:.2f}x"
            )
        for k, v in report["fraction_of_peak"].items():
            print(
                f"{k}: {report['achieved_gflops'][k]:.1f} GFLOP/s = {100 * v:.1f}% of the nominal peak ({report['peak_gflops']:.0f} GFLOP/s)"
            )
        emit_json(report, args.json)
        return
    results = [
        run_layout(recipe, layout, args.batch, args.size, args.steps, args.warmup, device, args.precision, args.perceptual_weights, net)
        for net in args.nets.split(",")
        for layout in args.layouts.split(",")
    ]
    fastest = min(results, key=lambda r: r["seconds_per_step"])["layout"]
    report = {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "recipe": str(args.recipe),
        "batch": args.batch,
        "lr_size": args.size,
        "hr_size": args.size * recipe.data.scale,
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "malloc": malloc,
        "results": results,
        "fastest_layout": fastest,
    }
    header = f"{'net':<12}{'layout':<14}{'s/step':>9}{'steps/s':>9}{'img/s':>8}" + "".join(f"{p:>17}" for p in PHASES)
    print(f"device: {report['device']}, batch {args.batch}, LR {args.size}px, HR {report['hr_size']}px, precision {args.precision}")
    print(header)
    for r in results:
        print(
            f"{r['net']:<12}{r['layout']:<14}{r['seconds_per_step']:>9.3f}{r['steps_per_s']:>9.4f}{r['images_per_s']:>8.3f}"
            + "".join(f"{r['phases_s'][p]:>17.3f}" for p in PHASES)
        )
    print(f"fastest layout: {fastest}")
    emit_json(report, args.json)


if __name__ == "__main__":
    main()
