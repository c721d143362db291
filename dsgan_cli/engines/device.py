"""Where and how training computes: the device's layouts, the precision the hardware runs fast, the process
group, and the device settings for fixed-size steps."""

from __future__ import annotations

import os

import torch

from ..method.recipe import Recipe

#: Layout per network ("G", "D", "P" = perceptual) for ``train.memory_format = "auto"``, by device type and
#: whether the networks are compiled: what scripts/bench_train.py --vs-original measured fastest
#: (BENCHMARKS.md). GPUs: cuDNN's preferred layout under mixed precision, not measured yet.
AUTO_LAYOUTS = {
    ("cpu", False): {"G": "channels_last", "D": "channels_last", "P": "contiguous"},
    ("cpu", True): {"G": "contiguous", "D": "contiguous", "P": "contiguous"},
    ("other", False): {"G": "channels_last", "D": "channels_last", "P": "channels_last"},
    ("other", True): {"G": "channels_last", "D": "channels_last", "P": "channels_last"},
}


def memory_formats_for(device: torch.device, choice: str = "auto", compiled: bool = False) -> dict[str, torch.memory_format]:
    """The recipe's ``train.memory_format`` as a layout per network: "G", "D" and "P" (the perceptual network)."""
    auto = AUTO_LAYOUTS[("cpu" if device.type == "cpu" else "other", compiled)]
    names = auto if choice == "auto" else dict.fromkeys("GDP", choice)
    return {k: torch.contiguous_format if v == "contiguous" else torch.channels_last for k, v in names.items()}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def auto_precision(cuda: bool) -> tuple[str, str]:
    """(precision, why) for ``train.precision = "auto"``: bf16 where the hardware has fast bf16 units, else fp32."""
    if cuda:
        # Not the default including_emulation=True: V100/T4-class GPUs emulate bf16, slower than fp32.
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", f"{torch.cuda.get_device_name()} computes bf16 natively"
        return "no", f"{torch.cuda.get_device_name()} has no native bf16"
    fast = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    if fast:
        return "bf16", f"this CPU has {' and '.join(fast)}"
    return "no", "this CPU has neither AVX-512 BF16 nor AMX: fp32 is faster there"


def on_cuda() -> bool:
    """Whether this run trains on a CUDA GPU (not when `accelerate launch --cpu` keeps it on the CPU)."""
    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "false").lower() not in ("true", "1", "yes")


def mixed_precision_for(recipe: Recipe) -> str:
    """`accelerate launch --mixed_precision bf16|fp16` wins; its default 'no' leaves the recipe's choice ('auto':
    see :func:`auto_precision`)."""
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launched != "no":
        return launched
    if recipe.train.precision == "auto":
        return auto_precision(on_cuda())[0]
    return recipe.train.precision


def cpu_processes() -> bool:
    """Several processes but no GPU (e.g. ``torchrun`` on CPUs): Accelerate needs cpu=True to use gloo
    instead of silently running independent copies."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def tune_device(device: torch.device) -> str:
    """Settings for fixed-size steps: cuDNN's fastest algorithms on CUDA; on the CPU, freed memory kept for reuse
    (for the rest of the process: it holds its peak memory; MALLOC_* or GLIBC_TUNABLES in the environment turn it
    off). Returns what was done, for the run's first line."""
    from ..plumbing.allocator import keep_freed_memory

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        return "cuDNN benchmark mode"
    return keep_freed_memory() if device.type == "cpu" else ""
