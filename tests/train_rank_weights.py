"""``dsgan train`` for the 2-process test: each rank also writes hashes of its own final G and D weights.

Run as ``torchrun ... tests/train_rank_weights.py HASH_DIR TRAIN_ARGS...``. The package is not changed:
the generator and discriminator classes are wrapped here so that the exact instances the training loop
builds on this rank are hashed after ``dsgan train`` returns.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch


def weights_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over sorted names and float32 bytes (the exported files store float32)."""
    h = hashlib.sha256()
    for k, v in sorted(tensors.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    """Train with recording G/D classes, then write rank{R}_{generator,discriminator}.sha256."""
    import dsgan_cli.method.models as models
    from dsgan_cli.cli import main as cli_main

    folder, argv = Path(sys.argv[1]), sys.argv[2:]
    built: dict[str, torch.nn.Module] = {}

    class Generator(models.Generator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built["generator"] = self

    class Discriminator(models.Discriminator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            built["discriminator"] = self

    models.Generator, models.Discriminator = Generator, Discriminator
    try:
        cli_main(argv)
    except SystemExit as e:
        if e.code:
            raise
    folder.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    for name, module in built.items():
        # Parameters only: D's BatchNorm running statistics are per-rank by design (never used: D runs in train mode).
        (folder / f"rank{rank}_{name}.sha256").write_text(weights_hash(dict(module.named_parameters())))


if __name__ == "__main__":
    main()
