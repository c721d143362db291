"""``pairs``: (HR, LR) training pairs for a super-resolution model, in the layout SR trainers read.

For every input image: HR = the image (or, with ``cleanup_factor`` N > 1, the
image first downscaled by N to remove its own noise: the original paper's
TDSR setting), cropped at the bottom/right to a multiple of the scale; LR =
G(bicubic downscale of HR by the scale), so LR is exactly HR / scale. Pairs go
to ``DIR/hr/NAME`` and ``DIR/lr/NAME`` (same name and extension, one flat
folder each, as BasicSR's paired-folder mode expects), and ``DIR/meta_info.txt``
lists them BasicSR-style (``NAME (H,W,3)`` with the HR shape).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .degrade import LOSSY_QUALITY, Job, generate_tiled, load_for_folder, output_format, remove_stale_partials, run_generator
from .errors import DsganError, file_error
from .images import (ImageReadError, check_output_dir, check_writable_dir, image_size, image_to_tensor, load_rgb,
                     require_images, save_image_atomic, to_uint8, write_bytes_atomic)
from .models import downscale
from .progress import progress_bar

META_INFO = "meta_info.txt"
SETTINGS_FILE = "pairs.json"
#: LR sides above this go through G in tiles (exact, see degrade.generate_tiled); bounds memory.
TILE = 1024


@dataclass
class PairsSummary:
    """What a ``pairs`` run did."""

    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    pairs: int = 0
    output_dir: str = ""
    scale: int = 1
    cleanup_factor: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (failures as ``{"path", "reason"}`` objects)."""
        d = asdict(self)
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        return d


def pair_name(rel: Path, suffix: str) -> str:
    """Flat output name for an input's relative path: ``a/b/face.jpg`` -> ``a__b__face.png``.

    BasicSR lists only the top level of each folder and pairs files by base
    name, so a nested tree is flattened instead of mirrored.
    """
    return "__".join(rel.with_suffix("").parts) + suffix


def plan_pairs(input_dir: Path, out_dir: Path, suffix: str) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """(source, name) for every input image; inputs whose flat name is already taken fail."""
    jobs, failed, owner = [], [], {}
    for src in require_images(input_dir):
        name = pair_name(src.relative_to(input_dir), suffix)
        if name in owner:
            failed.append((str(src), f"pair name {name} is already used by {owner[name]}"))
            continue
        owner[name] = src
        jobs.append((src, name))
    return jobs, failed


def check_pairs_dir(input_dir: Path, out_dir: Path) -> None:
    """Refuse a pairs folder whose hr/ or lr/ would be, contain or lie inside the input folder."""
    check_output_dir(input_dir, out_dir)
    inp = input_dir.resolve()
    for sub in (out_dir / "hr", out_dir / "lr"):
        check_output_dir(input_dir, sub)
        if sub.resolve() in inp.parents:
            raise file_error(out_dir, f"its {sub.name}/ folder holds the input folder {input_dir}; choose another pairs folder")


def check_settings(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to add pairs made with other settings to an existing pairs folder."""
    path = out_dir / SETTINGS_FILE
    if overwrite or not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        raise file_error(path, "unreadable; delete it or pass --overwrite") from None
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
    if changed:
        raise file_error(out_dir, f"holds pairs made with other settings ({', '.join(changed)}); "
                                  "choose another folder or pass --overwrite to remake them all")


def make_pair(img: torch.Tensor, generator, scale: int, cleanup_factor: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(HR, LR) as uint8 (H, W, 3) tensors from one image tensor (3, H, W) in [0, 1]."""
    x = img.unsqueeze(0)
    if cleanup_factor > 1:
        # Quantise the cleaned HR to 8 bits first: LR must come from the HR file the trainer will read.
        x = image_to_tensor(to_uint8(downscale(x, cleanup_factor)[0]).numpy()).unsqueeze(0)
    h, w = x.shape[-2:]
    if h < scale or w < scale:
        raise ValueError(f"too small: {w}x{h} after clean-up is smaller than the scale {scale}")
    x = x[:, :, : h - h % scale, : w - w % scale]
    xb = downscale(x, scale)
    if max(xb.shape[-2:]) > TILE:
        y = generate_tiled(generator, xb, TILE, device)
    else:
        y = run_generator(generator, xb, device).cpu()
    return to_uint8(x[0]), to_uint8(y[0])


def write_meta_info(out_dir: Path, names: list[str]) -> None:
    """``meta_info.txt``: one ``NAME (H,W,3)`` line per complete pair (HR shape), sorted."""
    lines = []
    for name in sorted(names):
        w, h = image_size(out_dir / "hr" / name)
        lines.append(f"{name} ({h},{w},3)\n")
    write_bytes_atomic(out_dir / META_INFO, "".join(lines).encode())


def make_pairs(input_dir, out_dir, checkpoint, *, scale: int | None = None, cleanup_factor: int = 1, fmt: str = "png",
               overwrite: bool = False, cpu: bool = False, progress: bool = True) -> PairsSummary:
    """Write HR/LR pairs for every image under ``input_dir`` into ``out_dir/hr`` and ``out_dir/lr``."""
    input_dir, out_dir, checkpoint = Path(input_dir), Path(out_dir), Path(checkpoint)
    pil_format, suffix = output_format(fmt)
    if cleanup_factor < 1:
        raise DsganError(f"--cleanup-factor must be 1 (none) or more, got {cleanup_factor}")
    generator, meta, scale = load_for_folder(checkpoint, input_dir, scale, True)
    check_pairs_dir(input_dir, out_dir)
    jobs, failed = plan_pairs(input_dir, out_dir, suffix)
    settings = {"scale": scale, "cleanup_factor": cleanup_factor, "format": suffix,
                "generator_sha256": meta["sha256"]}
    check_settings(out_dir, settings, overwrite)
    check_writable_dir(out_dir)
    write_bytes_atomic(out_dir / SETTINGS_FILE, json.dumps(settings, indent=2).encode())

    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    generator = generator.to(device)
    done = lambda name: (out_dir / "hr" / name).is_file() and (out_dir / "lr" / name).is_file()  # noqa: E731
    todo = [(src, name) for src, name in jobs if overwrite or not done(name)]
    # One process writes a pairs folder, so every leftover temporary of a planned output is stale.
    remove_stale_partials([Job(src, out_dir / sub / name) for src, name in jobs for sub in ("hr", "lr")])
    summary = PairsSummary(skipped=len(jobs) - len(todo), failed=failed, output_dir=str(out_dir), scale=scale,
                           cleanup_factor=cleanup_factor)
    params = {"quality": LOSSY_QUALITY} if pil_format in ("JPEG", "WEBP") else {}
    start = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task("pairs", total=len(todo))
        for src, name in todo:
            try:
                hr, lr = make_pair(image_to_tensor(load_rgb(src)[0]), generator, scale, cleanup_factor, device)
            except ImageReadError as e:
                summary.failed.append((str(src), e.reason))
            except OSError as e:  # e.g. a file vanished between listing and reading
                summary.failed.append((str(src), e.strerror or str(e)))
            except ValueError as e:
                summary.failed.append((str(src), str(e)))
            else:
                # HR first: a pair counts as done only once its LR exists too.
                save_image_atomic(Image.fromarray(hr.numpy(), "RGB"), out_dir / "hr" / name, pil_format, **params)
                save_image_atomic(Image.fromarray(lr.numpy(), "RGB"), out_dir / "lr" / name, pil_format, **params)
                summary.written += 1
            bar.advance(task)
    complete = [name for _, name in jobs if done(name)]
    write_meta_info(out_dir, complete)
    summary.pairs, summary.seconds = len(complete), time.perf_counter() - start
    summary.failed.sort()
    return summary


def report(summary: PairsSummary, console) -> None:
    """Print the human summary on ``console``."""
    for path, reason in summary.failed:
        console.print(f"failed: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {summary.written} pairs, skipped {summary.skipped} (already there), failed {len(summary.failed)} "
        f"in {summary.seconds:.1f} s; {summary.pairs} pairs (x{summary.scale}, clean-up x{summary.cleanup_factor}) "
        f"in {summary.output_dir}/hr, /lr and {META_INFO}",
        markup=False, highlight=False, soft_wrap=True,
    )
