"""``import``: checkpoints in the original DSGAN code's format become generator.safetensors; nothing else does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, write_images
from PIL import Image
from safetensors import safe_open
from torch import nn

from dsgan_cli.data.images import image_to_tensor, load_rgb
from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.method.models import Discriminator, Generator, GeneratorConfig, downscale


class OriginalResBlock(nn.Module):
    """Residual block as the paper's generator has it: conv, PReLU, conv, identity skip."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(self.prelu(self.conv1(x)))


class OriginalGenerator(nn.Module):
    """Independent replica of the original generator's module layout (blocks in a ModuleList, 64 channels)."""

    def __init__(self, n_res_blocks: int = 8):
        super().__init__()
        self.block_input = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.PReLU())
        self.res_blocks = nn.ModuleList(OriginalResBlock(64) for _ in range(n_res_blocks))
        self.block_output = nn.Conv2d(64, 3, 3, padding=1)

    def forward(self, x):
        h = self.block_input(x)
        for block in self.res_blocks:
            h = block(h)
        return torch.sigmoid(self.block_output(h))


def original_checkpoint(path: Path, n_res_blocks: int = 8, seed: int = 0, epoch: int = 300, iteration: int = 161_701) -> OriginalGenerator:
    """Write a .tar exactly as the original training script does (after one Adam step); return its generator."""
    torch.manual_seed(seed)
    g, d = OriginalGenerator(n_res_blocks), Discriminator()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=[0.5, 0.999])
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=[0.5, 0.999])
    rule = lambda e: 1.0 if e < 150 else 1.0 - max(0.0, float(e - 150) / 150)  # noqa: E731 - as saved by the original
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda=rule)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda=rule)
    x = torch.rand(1, 3, 8, 8)
    g(x).mean().backward()
    d(x).mean().backward()
    opt_g.step(), opt_d.step(), sched_g.step(), sched_d.step()
    torch.save(
        {
            "epoch": epoch,
            "iteration": iteration,
            "model_g_state_dict": g.state_dict(),
            "models_d_state_dict": d.state_dict(),
            "optimizer_g_state_dict": opt_g.state_dict(),
            "optimizer_d_state_dict": opt_d.state_dict(),
            "scheduler_g_state_dict": sched_g.state_dict(),
            "scheduler_d_state_dict": sched_d.state_dict(),
        },
        path,
    )
    return g.eval()


def one_line_error(res) -> str:
    """The stderr of a failed run, checked to be exactly one 'error:' line."""
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    return res.stderr


@pytest.mark.slow
def test_import_original_checkpoint_then_degrade(tmp_path):
    tar = tmp_path / "DF2K_gaussian.tar"
    original = original_checkpoint(tar)
    res = run_cli("import", tar, "-o", tmp_path / "generator.safetensors")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "generator.safetensors"
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["scale"] == "4" and meta["source"] == "DF2K_gaussian.tar"
    assert meta["epoch"] == "300" and meta["iteration"] == "161701" and meta["step"] == "161701"
    assert len(meta["source_sha256"]) == 64
    generator, info = load_generator(out)
    assert info["scale"] == 4 and generator.n_res_blocks == 8 and generator.channels == 64
    for key, value in original.state_dict().items():
        assert torch.equal(generator.state_dict()[key], value), key

    # degrade with the imported model: LR = HR / 4, pixels = the original network applied to Xb
    srcs = write_images(tmp_path / "hr", 2, 64)
    res = run_cli("degrade", tmp_path / "hr", tmp_path / "lr_fake", "-c", out, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["scale"] == 4
    for src in srcs:
        x = image_to_tensor(load_rgb(src)[0]).unsqueeze(0)
        with torch.no_grad():
            want = original(downscale(x, 4))[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        with Image.open(tmp_path / "lr_fake" / src.name) as im:
            got = np.asarray(im.convert("RGB"))
        assert got.shape == (16, 16, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float summation order only


@pytest.mark.slow
def test_import_default_output_name_and_no_overwrite(tmp_path):
    tar = tmp_path / "DPED.tar"
    original_checkpoint(tar, n_res_blocks=2)
    assert run_cli("import", tar).returncode == 0
    made = tmp_path / "DPED.safetensors"
    assert load_generator(made)[0].n_res_blocks == 2
    before = made.read_bytes()
    res = run_cli("import", tar)
    assert res.returncode == 2 and "--overwrite" in one_line_error(res)
    assert made.read_bytes() == before
    assert run_cli("import", tar, "--overwrite").returncode == 0


@pytest.mark.slow
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    sentinel = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    evil = tmp_path / "evil.tar"
    state = Generator().state_dict()
    torch.save({"epoch": 1, "iteration": 2, "model_g_state_dict": state, "extra": Payload()}, evil)
    res = run_cli("import", evil, "-o", tmp_path / "g.safetensors")
    assert res.returncode == 2
    assert "refused" in one_line_error(res) and str(evil) in res.stderr
    assert not sentinel.exists()
    assert not (tmp_path / "g.safetensors").exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
def test_anything_else_is_refused_with_one_line(tmp_path):
    cases = {}
    cases["text.tar"] = tmp_path / "text.tar"
    cases["text.tar"].write_text("not a checkpoint")
    cases["our_safetensors"] = tmp_path / "ours.safetensors"
    save_generator(Generator(), cases["our_safetensors"], step=0, scale=2)
    cases["plain_state_dict"] = tmp_path / "plain.pth"
    torch.save(Generator().state_dict(), cases["plain_state_dict"])
    cases["discriminator"] = tmp_path / "disc.tar"
    torch.save({"model_g_state_dict": Discriminator().state_dict()}, cases["discriminator"])
    cases["wrong_shape"] = tmp_path / "wide.tar"
    sd = Generator().state_dict()
    sd["block_output.weight"] = torch.zeros(3, 32, 3, 3)
    torch.save({"model_g_state_dict": sd}, cases["wrong_shape"])
    cases["missing_tensor"] = tmp_path / "partial.tar"
    sd = Generator().state_dict()
    del sd["res_blocks.3.conv2.bias"]
    torch.save({"model_g_state_dict": sd}, cases["missing_tensor"])
    cases["truncated"] = tmp_path / "cut.tar"
    original_checkpoint(tmp_path / "full.tar", n_res_blocks=1)
    data = (tmp_path / "full.tar").read_bytes()
    cases["truncated"].write_bytes(data[: len(data) // 2])
    cases["missing"] = tmp_path / "nope.tar"
    reasons = {}
    for name, path in cases.items():
        res = run_cli("import", path, "-o", tmp_path / f"{name}.out.safetensors")
        assert res.returncode == 2, (name, res.stderr)
        reasons[name] = one_line_error(res)
        assert str(path) in res.stderr, res.stderr
        assert not (tmp_path / f"{name}.out.safetensors").exists()
    assert "model_g_state_dict" in reasons["plain_state_dict"]
    assert "does not have" in reasons["discriminator"]
    assert "(3, 32, 3, 3)" in reasons["wrong_shape"]
    assert "res_blocks.3.conv2.bias" in reasons["missing_tensor"]


@pytest.mark.parametrize("prefix", ["", "module."])
def test_key_names_of_the_original_map_onto_ours(prefix):
    from dsgan_cli.commands.importer import our_key

    names = [prefix + k for k in OriginalGenerator(3).state_dict()]
    assert sorted(our_key(k) for k in names) == sorted(Generator(GeneratorConfig(3)).state_dict())


@pytest.mark.slow
def test_huge_declared_networks_and_tensors_without_values_are_refused_before_allocation(tmp_path):
    """A 45 KB file must not make import build a 100-million-block network or materialise a 1.4 TB tensor."""
    import resource

    cases = {}
    sd = Generator(GeneratorConfig(n_res_blocks=1, channels=8)).state_dict()
    cases["far_block"] = {**sd, "res_blocks.100000000.prelu.weight": torch.ones(1)}
    wide = Generator(GeneratorConfig(n_res_blocks=1, channels=8)).state_dict()
    wide["block_input.0.weight"] = torch.zeros(1).expand(200_000, 3, 3, 3)  # stride 0: tiny on disk
    cases["wide_stride0"] = wide
    sparse = dict(sd)
    sparse["block_output.bias"] = torch.zeros(3).to_sparse()
    cases["sparse"] = sparse
    meta = dict(sd)
    meta["block_output.bias"] = torch.empty(3, device="meta")
    cases["meta"] = meta
    for name, state in cases.items():
        path = tmp_path / f"{name}.tar"
        torch.save({"model_g_state_dict": state}, path)
        res = run_cli("import", path, "-o", tmp_path / f"{name}.safetensors")
        assert res.returncode == 2, (name, res.stderr)
        assert str(path) in one_line_error(res), res.stderr
        assert not (tmp_path / f"{name}.safetensors").exists()
    # The refusals happen in this process too, without a large allocation (peak memory stays small).
    from dsgan_cli.commands.importer import convert_state
    from dsgan_cli.plumbing.errors import DsganError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name in ("far_block", "wide_stride0"):
        with pytest.raises(DsganError, match="not a DSGAN generator|not stored densely"):
            convert_state(tmp_path / f"{name}.tar", cases[name])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


@pytest.mark.slow
def test_a_compressed_checkpoint_that_would_expand_is_refused_before_loading(tmp_path):
    """torch.save stores zip entries uncompressed; a deflated 64 MiB of zeros is a few KiB on disk and would
    expand in memory on load. It is refused from the zip directory alone."""
    import zipfile

    plain = tmp_path / "plain.tar"
    g = OriginalGenerator(1)
    torch.save({"model_g_state_dict": g.state_dict(), "models_d_state_dict": {"w": torch.zeros(16 << 20)}}, plain)
    bomb = tmp_path / "bomb.tar"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < plain.stat().st_size // 100, "the test file does not compress: it tests nothing"
    res = run_cli("import", bomb, "-o", tmp_path / "out.safetensors")
    assert res.returncode == 2, res.stderr
    assert f"{bomb}: refused: " in one_line_error(res) and "compressed entries" in res.stderr
    assert not (tmp_path / "out.safetensors").exists()
    # The same content stored as torch.save stores it imports (memory-mapped: the unused 64 MiB is never read).
    res = run_cli("import", plain, "-o", tmp_path / "ok.safetensors")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "ok.safetensors").is_file()
