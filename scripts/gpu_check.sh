#!/usr/bin/env bash
# One prepared GPU check, for a machine with a CUDA GPU (about 8 minutes; installs nothing beyond the project):
#   1. the training step of the idphoto recipe (the card's) and of the paper recipe at batch 16, LR 128 px,
#      in fp32, bf16 and fp16;
#   2. with 2+ GPUs, a 2-process `accelerate launch` smoke run of `dsgan train`;
#   3. `dsgan degrade` throughput on 1,000 generated 256 px images (128 px outputs).
# Everything lands in one JSON (default gpu_check.json; OUT=path to change). Targets (BENCHMARKS.md):
# bf16 >= 1.8x fp32 on the step, degrade >= 2,000 images/s.
#   bash scripts/gpu_check.sh            # from the repository root, after `make venv`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check.json}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsgan-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

gpus=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$gpus" -eq 0 ]; then
    echo "gpu_check: no CUDA GPU visible to torch here (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 2
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.device_count(), "x", torch.cuda.get_device_name(0), "torch", torch.__version__)' >&2

# 1. training step, two recipes, three precisions (random perceptual weights keep it offline; same cost)
for r in idphoto paper; do
    for p in no bf16 fp16; do
        "$PY" scripts/bench_train.py --recipe "$r" --batch 16 --size 128 --steps 20 --warmup 5 --precision "$p" \
            --perceptual-weights random --json "$WORK/train_${r}_$p.json" >&2
    done
done

# 2. two processes, when there are two GPUs: a few steps of a shrunk recipe through the real launcher
multi=skipped
if [ "$gpus" -ge 2 ]; then
    "$PY" - "$WORK/data" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for sub, size in (("hr", 256), ("lr", 128)):
    (root / sub).mkdir(parents=True)
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / sub / f"{i:03d}.png")
EOF
    if .venv/bin/accelerate launch --num_processes 2 --multi_gpu -m dsgan_cli train idphoto \
        --set data.hr_dir="$WORK/data/hr" --set data.lr_dir="$WORK/data/lr" --set train.iterations=20 \
        --set train.checkpoint_every=10 --set perceptual.weights='"random"' --set train.output_dir="$WORK/run" \
        --set data.cache_dir="$WORK/cache" >"$WORK/multi.log" 2>&1; then
        multi=passed
    else
        multi=failed
        tail -20 "$WORK/multi.log" >&2
    fi
fi

# 3. degrade throughput: 1,000 generated 256 px images
"$PY" scripts/bench_degrade.py --images 1000 --size 256 --repeats 2 --json "$WORK/degrade.json" >&2

"$PY" - "$WORK" "$OUT" "$gpus" "$multi" <<'EOF'
import json
import sys
from pathlib import Path
work, out, gpus, multi = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
result = {"gpus": gpus, "train": {r: {p: json.loads((work / f"train_{r}_{p}.json").read_text()) for p in ("no", "bf16", "fp16")}
                                  for r in ("idphoto", "paper")},
          "two_process_run": multi, "degrade": json.loads((work / "degrade.json").read_text())}
out.write_text(json.dumps(result, indent=2))
print(f"gpu_check: wrote {out}")
EOF
