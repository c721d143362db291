"""The README's pipeline (two prepare calls, train, degrade, eval), run as written in a fresh project folder.

Only the training line gets ``--set`` overrides appended that shrink the built-in recipe to seconds.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from dsgan_cli.metrics import fid

skdata = pytest.importorskip("skimage.data")

#: Recipe keys the test shrinks so that training takes seconds on a CPU; everything else is the built-in recipe.
SMALL = {
    "train.iterations": "2",
    "train.batch_size": "2",
    "model.n_res_blocks": "1",
    "model.channels": "8",
    "data.crop_size": "32",
    "data.num_workers": "0",
    "perceptual.weights": '"random"',
    "perceptual.layers": '["relu1_2"]',
    "train.checkpoint_every": "2",
    "train.sample_every": "2",
    "train.log_every": "1",
}


def readme_pipeline() -> list[str]:
    """The command lines of the README's pipeline block."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- pipeline -->\s*```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def raw_photos(folder: Path, low_quality: bool) -> None:
    """Four photos of one face (straight, rotated both ways, mirrored); low quality: small, noisy, JPEG q40."""
    folder.mkdir(parents=True)
    astro = Image.fromarray(skdata.astronaut())
    variants = {
        "straight": astro,
        "left": astro.rotate(8, resample=Image.Resampling.BICUBIC),
        "right": astro.rotate(-8, resample=Image.Resampling.BICUBIC),
        "mirror": astro.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    }
    rng = np.random.default_rng(0)
    for name, img in variants.items():
        if low_quality:
            img = img.resize((320, 320), Image.Resampling.BICUBIC)
            noisy = np.asarray(img, np.float64) + rng.normal(0, 8, (320, 320, 3))
            Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8)).save(folder / f"{name}.jpg", quality=40)
        else:
            img.save(folder / f"{name}.png")


@pytest.mark.slow
def test_readme_pipeline_runs_as_written(tmp_path):
    lines = readme_pipeline()
    assert [shlex.split(line, comments=True)[:2] for line in lines] == [
        ["dsgan", "prepare"],
        ["dsgan", "prepare"],
        ["accelerate", "launch"],
        ["dsgan", "degrade"],
        ["dsgan", "eval"],
    ]
    # The design card's line (quiet: dsgan's error line is the last one): the recipe by its path under recipes/
    # (the built-in one outside the repo).
    assert shlex.split(lines[2], comments=True) == ["accelerate", "launch", "-q", "-m", "dsgan_cli", "train", "recipes/idphoto.toml"]
    # The commands chain: prepare writes the recipe's folders, degrade and eval read them.
    assert [shlex.split(line, comments=True)[-1] for line in lines[:2]] == ["data/idphoto/hr", "data/idphoto/lr"]
    assert shlex.split(lines[3], comments=True) == ["dsgan", "degrade", "data/idphoto/hr", "./lr_fake"]
    assert shlex.split(lines[4], comments=True) == ["dsgan", "eval", "./lr_fake", "data/idphoto/lr", "--reference", "data/idphoto/hr"]

    project = tmp_path / "project"
    raw_photos(project / "raw_clean", low_quality=False)
    raw_photos(project / "raw_lowq", low_quality=True)
    weights = tmp_path / "inception-random.pth"
    torch.save(fid.random_state_dict(), weights)
    bindir = Path(sys.executable).parent
    env = dict(
        os.environ,
        OMP_NUM_THREADS="2",
        CUDA_VISIBLE_DEVICES="",
        DSGAN_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        DSGAN_INCEPTION_WEIGHTS=str(weights),
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    assert shutil.which("dsgan", path=env["PATH"]) and shutil.which("accelerate", path=env["PATH"])

    def run(i: int, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        res = subprocess.run(
            shlex.split(lines[i], comments=True) + list(extra), cwd=project, env=env, capture_output=True, text=True, timeout=900
        )
        assert res.returncode == 0, (lines[i], res.stderr[-3000:])
        return res

    run(0), run(1)
    hr = sorted((project / "data" / "idphoto" / "hr").glob("*.png"))
    lr = sorted((project / "data" / "idphoto" / "lr").glob("*.png"))
    assert len(hr) == 4 and len(lr) == 4, (hr, lr)
    run(2, tuple(arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")))
    assert (project / "runs" / "idphoto" / "generator.safetensors").is_file()
    res = run(3)
    assert "using checkpoint runs/idphoto/generator.safetensors" in res.stderr
    fakes = sorted((project / "lr_fake").glob("*.png"))
    assert [p.name for p in fakes] == [p.name for p in hr]
    for p in fakes:
        with Image.open(p) as im:
            assert im.size == (128, 128)
    res = run(4)
    assert "FID" in res.stdout, res.stdout
    said = " ".join(res.stdout.split())
    # The verdict against the Xb baseline, not the line that asks for --reference.
    assert "real floor" in said and "Xb" in said and "give --reference" not in said, res.stdout
    assert not list(project.glob("*.png")), "eval dropped a plot into the current folder"

    # The design card's first line as typed: the aligned crops land beside ./raw.
    shutil.copytree(project / "raw_clean", project / "raw")
    res = subprocess.run(["dsgan", "prepare", "./raw"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((project / "raw_aligned_256").glob("*.png"))) == 4
