"""Shared test helpers: real image files on disk and real CLI subprocess runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "tiny.toml"


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``dsgan_cli.engines.train``), subpackages included.

    Checks that scan the package's files use this, and it fails when a package that pyproject.toml ships has no
    module of its own here: such a scan would pass on files it never saw."""
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p for p in sorted((REPO / "dsgan_cli").rglob("*.py"))
    }
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    for package in shipped:
        if package == "dsgan_cli.recipes":  # package data mapped onto the top-level recipes/ folder
            continue
        own = [m for m in modules if m.rpartition(".")[0] == package]
        assert own, f"no module found in {package}: the package's files were not all scanned"
    return modules


def synthetic_face_like(size: int, seed: int) -> np.ndarray:
    """A smooth, structured RGB uint8 image (gradients + blobs), deterministic per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    img = np.zeros((size, size, 3))
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.25 * (a * xx + b * yy) + 0.1 * np.sin(2 * np.pi * (d * xx + yy))
    for _ in range(3):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        img[mask] = rng.uniform(0.1, 0.9, 3)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def write_images(folder: Path, n: int, size: int, seed: int = 0, noise: float = 0.0, suffix: str = ".png") -> list[Path]:
    """Write ``n`` structured RGB images of ``size`` x ``size`` to ``folder``; optional Gaussian noise (0-255 scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 10_000)
    paths = []
    for i in range(n):
        arr = synthetic_face_like(size, seed * 1000 + i).astype(np.float64)
        if noise:
            arr = arr + rng.normal(0, noise, arr.shape)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        p = folder / f"img_{i:03d}{suffix}"
        Image.fromarray(arr, "RGB").save(p)
        paths.append(p)
    return paths


def small_generator_file(path: Path, seed: int, **options) -> Path:
    """A 2-block, 16-channel generator (scale 2) with its weights perturbed away from the init, saved at ``path``;
    ``options`` are further Generator options (e.g. noise inputs, padding)."""
    import torch

    from dsgan_cli.engines.checkpoint import save_generator
    from dsgan_cli.method.models import Generator, GeneratorConfig

    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(n_res_blocks=2, channels=16, **options))
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_generator(g, path, step=0, scale=2)
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m dsgan_cli ARGS`` in a subprocess and capture its output."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "2")
    full_env["DSGAN_OFFLINE"] = "1"
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "dsgan_cli", *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(stderr: str, *must: str) -> str:
    """The single ``error:`` line of ``stderr``; asserts no traceback and that it names ``must``."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    for text in must:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def cli():
    """The :func:`run_cli` helper as a fixture."""
    return run_cli


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never try to download weights."""
    monkeypatch.setenv("DSGAN_OFFLINE", "1")


@pytest.fixture
def tiny_recipe() -> Path:
    """Path of the tiny test recipe."""
    return TINY_RECIPE


@pytest.fixture(autouse=True)
def _test_cache_home(tmp_path_factory, monkeypatch):
    """Caches written by default (decoded training images, FID statistics) go to a per-session test
    folder instead of the user's ~/.cache; torch's own folder (pretrained weights) stays where it is."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(Path(torch.hub.get_dir()).parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache-home"))


def chattr_available() -> bool:
    return shutil.which("chattr") is not None


@contextlib.contextmanager
def read_only(d: Path):
    """``d`` made a folder that even root cannot write into (the immutable attribute, chattr +i) while inside."""
    if os.geteuid() != 0:
        d.chmod(0o555)
        try:
            yield d
        finally:
            d.chmod(0o755)
        return
    if not chattr_available():
        pytest.skip("running as root without chattr: no way to make a folder read-only for root here")
    res = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"chattr +i unsupported on this filesystem: {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder that even root cannot write into (see :func:`read_only`)."""
    d = tmp_path / "ro"
    d.mkdir()
    with read_only(d):
        yield d


def libjpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    """``arr`` (uint8 HWC) saved by PIL (libjpeg) as JPEG at ``quality`` and decoded."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def chw(arr: np.ndarray):
    """A uint8 HWC array as a (C, H, W) torch tensor."""
    import torch

    return torch.from_numpy(np.array(arr)).permute(2, 0, 1)


@pytest.fixture(scope="module")
def gens(tmp_path_factory) -> dict[str, Path]:
    """Two different tiny generators (scale 2)."""
    import torch

    from dsgan_cli.engines.checkpoint import save_generator
    from dsgan_cli.method.models import Generator, GeneratorConfig

    root = tmp_path_factory.mktemp("gens")
    out = {}
    for name, seed in (("g1", 0), ("g2", 1)):
        torch.manual_seed(seed)
        g = Generator(GeneratorConfig(n_res_blocks=1, channels=8))
        out[name] = root / f"{name}.safetensors"
        save_generator(g, out[name], step=1, scale=2)
    return out


@pytest.fixture
def train_data(tmp_path):
    """Four 32 px HR and four 16 px LR images, for short trainings."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    return hr, lr
