"""Argument lists and inputs shared by the hostile-use tests in tests/faults/.

Those cases run the real CLI on real files and check that nothing a user owns
is lost (input trees are hashed before and after), that nothing hangs, and
that refusals are one line naming the file with exit code 2.
"""

from __future__ import annotations

import pytest
from PIL import Image


def degrade_args(inp, out, ckpt, *extra):
    return ["degrade", inp, out, "--checkpoint", ckpt, "--no-progress", *extra]


def face_photo(size: int = 256) -> Image.Image:
    """A real portrait (scikit-image's astronaut) resized to ``size``."""
    skdata = pytest.importorskip("skimage.data")
    return Image.fromarray(skdata.astronaut()).resize((size, size), Image.Resampling.LANCZOS)


def train_args(recipe, hr, lr, out, *sets):
    args = [
        "train",
        recipe,
        "--no-progress",
        "--set",
        f"data.hr_dir={hr}",
        "--set",
        f"data.lr_dir={lr}",
        "--set",
        f"train.output_dir={out}",
        "--set",
        "loss.w_perceptual=0",
        "--set",
        "train.batch_size=2",
    ]
    for s in sets:
        args += ["--set", s]
    return args
