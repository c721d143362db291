"""Training data memory per process and start-up time: the shared memory-mapped cache vs a RAM copy per process.

    .venv/bin/python scripts/bench_data.py --images 20000 --hr 64 --lr 32 --procs 1,2,4

Writes a synthetic set (``--images`` HR and as many real-LR PNGs), then runs
``dsgan train`` (a tiny model, 1 step) under ``torchrun`` with 1, 2 and 4 CPU
processes, with the cache (``data.cache_dir``) and with ``data.cache_dir = "none"``
(every process decodes its own copy into RAM; ``--ram-procs``). While a run lasts it samples
every training process's /proc status: RSS, its anonymous (private) part, its
file-backed part (the mapped cache, shared through the page cache) and PSS
(each shared page divided by the processes mapping it). Also times the data
loading alone in one process: cold (empty cache), cached, and RAM decode.
Prints a table and JSON (``--json PATH`` writes it to a file as well).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchio import emit_json  # noqa: E402  (scripts/ is on sys.path when a script runs)


def write_set(folder: Path, n: int, size: int, seed: int) -> None:
    """``n`` random RGB PNGs of ``size`` x ``size`` (fast zlib level: only the decoded pixels matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png", compress_level=1)


def proc_memory(pid: int) -> dict[str, int] | None:
    """RSS, RssAnon, RssFile and PSS of ``pid`` in bytes, or None when it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = {}
    for line in (status + rollup).splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "Pss") and v.strip().endswith("kB"):
            fields[k] = int(v.split()[0]) * 1024
    return fields


def training_pids(root: int) -> list[int]:
    """Descendants of ``root`` that run ``dsgan_cli train`` (the ranks under torchrun)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            todo.append(c)
            try:
                cmd = Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"dsgan_cli" in cmd and b"torch.distributed.run" not in cmd:
                out.append(c)
    return out


def run_train(procs: int, hr: Path, lr: Path, out: Path, cache: str, args) -> dict:
    """One ``dsgan train`` under torchrun; the peak memory of each rank while it runs."""
    shutil.rmtree(out, ignore_errors=True)
    sets = [
        f"data.hr_dir={hr}",
        f"data.lr_dir={lr}",
        f"data.hr_size={args.hr}",
        f"data.lr_size={args.lr}",
        f"train.output_dir={out}",
        f"data.cache_dir={cache}",
        "train.iterations=1",
        "train.batch_size=2",
        "loss.w_perceptual=0",
        "model.n_res_blocks=1",
        "model.channels=8",
        "data.num_workers=0",
        f"data.crop_size={min(args.lr, 16)}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(procs),
        "-m",
        "dsgan_cli",
        "train",
        str(REPO / "tests" / "tiny.toml"),
        "--no-progress",
    ]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DSGAN_OFFLINE": "1"}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak: dict[int, dict[str, int]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in training_pids(p.pid):
                m = proc_memory(pid)
                if m:
                    peak[pid] = {k: max(v, peak.get(pid, {}).get(k, 0)) for k, v in m.items()}
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    stdout, stderr = p.communicate()
    done.set()
    t.join()
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"train failed ({p.returncode}):\n{stderr[-3000:]}")
    ranks = sorted(peak.values(), key=lambda m: m.get("VmRSS", 0))
    return {
        "procs": procs,
        "cache": cache,
        "wall_s": round(wall, 2),
        "ranks_seen": len(ranks),
        "peak_per_rank_MiB": [{k: round(v / 2**20, 1) for k, v in m.items()} for m in ranks],
    }


def time_loading(hr: Path, lr: Path, cache: Path, args) -> dict:
    """Seconds to load both sets in this process: cold cache, cached, and RAM decode (no cache)."""
    from dsgan_cli.data.training_sets import load_data
    from dsgan_cli.method.recipe import Recipe

    r = Recipe()
    r.data.hr_dir, r.data.lr_dir, r.data.hr_size, r.data.lr_size = str(hr), str(lr), args.hr, args.lr
    r.data.num_workers = 0  # all cores for decoding
    out = {}
    shutil.rmtree(cache, ignore_errors=True)
    for name, where in (("cold_cache", str(cache)), ("cached", str(cache)), ("ram_decode_no_cache", "none")):
        r.data.cache_dir = where
        t0 = time.perf_counter()
        load_data(r, show=False)
        out[name] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--hr", type=int, default=64)
    ap.add_argument("--lr", type=int, default=32)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--ram-procs", default="1,2,4", help="process counts also run with data.cache_dir = none ('' for none)")
    ap.add_argument("--work", type=Path, help="folder for the synthetic set and runs (default: a temp folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="dsgan-bench-data-"))
    hr, lr, cache = work / "hr", work / "lr", work / "cache"
    if not (hr.is_dir() and len(list(hr.iterdir())) == args.images):
        t0 = time.perf_counter()
        write_set(hr, args.images, args.hr, 0)
        write_set(lr, args.images, args.lr, 1)
        print(f"wrote {2 * args.images} PNGs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    report = {
        "images_per_set": args.images,
        "hr": args.hr,
        "lr": args.lr,
        "cpu_cores": os.cpu_count(),
        "pixel_bytes_both_sets_MiB": round(args.images * 3 * (args.hr**2 + args.lr**2) / 2**20, 1),
    }
    report["load_seconds"] = time_loading(hr, lr, cache, args)
    print(f"load both sets: {report['load_seconds']}", file=sys.stderr)
    runs = []
    plan = [(int(n), str(cache)) for n in args.procs.split(",") if n]
    plan += [(int(n), "none") for n in args.ram_procs.split(",") if n]
    for n, where in plan:
        res = run_train(n, hr, lr, work / "run", where, args)
        print(json.dumps(res), file=sys.stderr)
        runs.append(res)
    report["runs"] = runs
    print(f"{'procs':>5} {'data':>7} {'wall s':>7}  per rank peak MiB: RSS / anon / file / PSS")
    for r in runs:
        per = "  ".join(
            f"{m.get('VmRSS', 0):.0f}/{m.get('RssAnon', 0):.0f}/{m.get('RssFile', 0):.0f}/{m.get('Pss', 0):.0f}"
            for m in r["peak_per_rank_MiB"]
        )
        print(f"{r['procs']:>5} {'cache' if r['cache'] != 'none' else 'RAM':>7} {r['wall_s']:>7}  {per}")
    emit_json(report, args.json)


if __name__ == "__main__":
    main()
