"""``degrade``: folder conversion with a generator checkpoint, on real files and real CLI runs."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, small_generator_file, synthetic_face_like, write_images
from PIL import Image
from safetensors.torch import save_file

from dsgan_cli import cli
from dsgan_cli.commands.degrade import DegradeScale, degrade_folder
from dsgan_cli.data.images import image_to_tensor, load_rgb
from dsgan_cli.engines.checkpoint import load_generator, save_generator
from dsgan_cli.engines.generate import generate_tiled
from dsgan_cli.engines.run_settings import RunOptions
from dsgan_cli.method.models import Discriminator, Generator, GeneratorConfig, downscale
from dsgan_cli.plumbing.errors import DsganError


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small generator checkpoint (scale 2) with non-trivial weights."""
    return small_generator_file(tmp_path_factory.mktemp("ckpt") / "generator.safetensors", seed=0)


def expected_output(ckpt: Path, src: Path, scale: int = 2) -> np.ndarray:
    """round(G(downscale(x))) computed directly, as uint8 HWC."""
    g, _ = load_generator(ckpt)
    x = image_to_tensor(load_rgb(src)[0]).unsqueeze(0)
    with torch.inference_mode():
        y = g(downscale(x, scale))[0]
    return y.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def read(path: Path) -> np.ndarray:
    """Pixels of an image file as uint8 HWC."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def run(inp, out, ckpt, scale=None, downscale=True, overwrite=False, **kw):
    """degrade_folder without a progress bar; ``kw`` are RunOptions fields."""
    kw.setdefault("progress", False)
    return degrade_folder(inp, out, ckpt, RunOptions(**kw), DegradeScale(scale, downscale), overwrite=overwrite)


@pytest.mark.slow
def test_cli_end_to_end_mirrors_tree_and_halves_sizes(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "lr_fake"
    srcs = write_images(inp, 2, 32) + write_images(inp / "sub" / "deeper", 2, 32, seed=1, suffix=".jpg")
    res = run_cli("degrade", inp, out, "--checkpoint", ckpt.parent, "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 4 and summary["skipped"] == 0 and summary["failed"] == []
    assert "wrote 4, skipped 0" in res.stderr
    for src in srcs:
        dest = out / src.relative_to(inp).with_suffix(".png")
        assert dest.is_file(), dest
        with Image.open(dest) as im:
            assert im.format == "PNG" and im.size == (16, 16) and im.mode == "RGB"
    assert sorted(p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.png")) == sorted(
        s.relative_to(inp).with_suffix("").as_posix() for s in srcs
    )
    assert not list(out.rglob("*.partial"))


def test_output_equals_direct_generator_computation(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "out"
    srcs = write_images(inp, 3, 32, noise=8)
    summary = run(inp, out, ckpt)
    assert summary.written == 3
    for src in srcs:
        got = read(out / src.name)
        assert np.array_equal(got, expected_output(ckpt, src))


def test_existing_outputs_skipped_unless_overwrite(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "out"
    srcs = write_images(inp, 3, 32)
    assert run(inp, out, ckpt).written == 3
    marker = out / srcs[0].name
    Image.new("RGB", (5, 5), (1, 2, 3)).save(marker)
    (out / srcs[1].name).unlink()
    # What a run killed mid-write leaves: a hidden temporary, never a truncated output.
    stale = out / f".{srcs[1].name}.k1ll3d.partial"
    stale.write_bytes(b"\x89PNG half")
    second = run(inp, out, ckpt)
    assert (second.written, second.skipped) == (1, 2)
    assert not stale.exists()
    assert read(marker).shape == (5, 5, 3)  # never overwritten unasked
    third = run(inp, out, ckpt, overwrite=True)
    assert (third.written, third.skipped) == (3, 0)
    assert np.array_equal(read(marker), expected_output(ckpt, srcs[0]))


@pytest.mark.slow
def test_output_folder_must_not_be_input_or_inside_it(tmp_path, ckpt):
    inp = tmp_path / "hr"
    write_images(inp, 1, 16)
    with pytest.raises(DsganError, match="is the input folder") as e:
        run(inp, inp, ckpt)
    assert e.value.exit_code == 2
    res = run_cli("degrade", inp, inp / "out", "--checkpoint", ckpt)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "inside the input folder" in res.stderr
    assert not (inp / "out").exists()


def test_mixed_sizes_with_worker_process(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "out"
    shapes = [(32, 32), (24, 40), (32, 32), (18, 10), (24, 40), (7, 9)]
    inp.mkdir()
    srcs = []
    for i, (h, w) in enumerate(shapes):
        arr = synthetic_face_like(max(h, w), i)[:h, :w]
        srcs.append(inp / f"m{i}.png")
        Image.fromarray(arr).save(srcs[-1])
    summary = run(inp, out, ckpt, workers=1, batch_size=2)
    assert summary.written == len(shapes) and not summary.failed
    for src, (h, w) in zip(srcs, shapes):
        got = read(out / src.name)
        assert got.shape == (round(h / 2), round(w / 2), 3)
        assert np.array_equal(got, expected_output(ckpt, src))


def test_tiled_generator_equals_untiled(ckpt):
    g, _ = load_generator(ckpt)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 37, 29)
    with torch.inference_mode():
        whole = g(x)
    for tile in (5, 8, 16, 40):
        tiled = generate_tiled(g, x, tile, torch.device("cpu"))
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0), tile
    # The margin matters: without it, pixels near tile seams are wrong.
    seamy = generate_tiled(g, x, 8, torch.device("cpu"), margin=1)
    assert (seamy - whole).abs().max() > 1e-3


def test_tiled_folder_run_matches_untiled(tmp_path, ckpt):
    inp = tmp_path / "hr"
    write_images(inp, 2, 44, noise=10)
    run(inp, tmp_path / "whole", ckpt, tile=0)
    summary = run(inp, tmp_path / "tiled", ckpt, tile=7)
    assert summary.written == 2
    for p in sorted((tmp_path / "whole").glob("*.png")):
        a, b = read(p).astype(int), read(tmp_path / "tiled" / p.name).astype(int)
        # Equal up to float summation order; a value exactly at a rounding boundary may move by one level.
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.001


def _odd_mode_images(folder: Path) -> dict[str, Path]:
    """Grayscale, palette, RGBA, CMYK JPEG, 16-bit PNG and an EXIF-rotated JPEG."""
    folder.mkdir(parents=True)
    base = Image.fromarray(synthetic_face_like(24, 3))
    paths = {
        "L": folder / "gray.png",
        "P": folder / "palette.png",
        "RGBA": folder / "alpha.png",
        "CMYK": folder / "cmyk.jpg",
        "16bit": folder / "deep.png",
        "exif": folder / "rotated.jpg",
    }
    base.convert("L").save(paths["L"])
    base.convert("P", palette=Image.Palette.ADAPTIVE).save(paths["P"])
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(paths["RGBA"])
    base.convert("CMYK").save(paths["CMYK"], quality=95)
    Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257).save(paths["16bit"])
    wide = Image.fromarray(synthetic_face_like(40, 4)[:24, :40])  # 40 wide, 24 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    wide.save(paths["exif"], exif=exif, quality=95)
    return paths


def test_odd_modes_converted_and_counted(tmp_path, ckpt):
    paths = _odd_mode_images(tmp_path / "hr")
    summary = run(tmp_path / "hr", tmp_path / "out", ckpt)
    assert summary.written == 6 and not summary.failed
    assert sum(summary.converted_modes.values()) == 5
    assert {"L", "P", "CMYK"} <= set(summary.converted_modes)
    assert any(m.startswith("I") for m in summary.converted_modes)
    assert any(m in ("RGBA", "LA", "PA") for m in summary.converted_modes)
    with Image.open(tmp_path / "out" / "rotated.png") as im:
        assert im.size == (12, 20)  # orientation applied before the downscale
    for p in paths.values():
        assert np.array_equal(read(tmp_path / "out" / f"{p.stem}.png"), expected_output(ckpt, p))


@pytest.mark.slow
def test_unreadable_files_fail_run_goes_on_and_json(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "out"
    good = write_images(inp, 2, 16)
    (inp / "notes.png").write_text("not an image")
    (inp / "empty.jpg").write_bytes(b"")
    data = good[0].read_bytes()
    (inp / "cut.png").write_bytes(data[: len(data) // 2])
    res = run_cli("degrade", inp, out, "--checkpoint", ckpt, "--json")
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 2
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert set(reasons) == {"notes.png", "empty.jpg", "cut.png"}
    assert "not an image" in reasons["notes.png"] and "empty" in reasons["empty.jpg"]
    assert "failed 3" in res.stderr and "notes.png" in res.stderr
    assert sorted(p.name for p in out.iterdir() if p.name not in (".dsgan-degrade.json", ".dsgan.lock")) == sorted(p.name for p in good)


def test_same_stem_inputs_do_not_overwrite_each_other(tmp_path, ckpt):
    inp = tmp_path / "hr"
    write_images(inp, 1, 16, suffix=".png")
    write_images(inp, 1, 16, seed=5, suffix=".jpg")
    summary = run(inp, tmp_path / "out", ckpt)
    assert summary.written == 1 and len(summary.failed) == 1
    assert "same stem" in summary.failed[0][1]


def test_no_downscale_and_format(tmp_path, ckpt):
    inp = tmp_path / "lr"
    write_images(inp, 1, 20)
    summary = run(inp, tmp_path / "out", ckpt, downscale=False, fmt="jpg")
    assert summary.written == 1 and summary.scale == 1
    with Image.open(tmp_path / "out" / "img_000.jpg") as im:
        assert im.format == "JPEG" and im.size == (20, 20)
    with pytest.raises(DsganError, match="unknown output format"):
        run(inp, tmp_path / "out2", ckpt, fmt="gif")


def _cli_error(argv: list[str], capsys) -> tuple[int, str]:
    """Run the CLI in-process; return (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code, capsys.readouterr().err


def test_bad_checkpoints_exit_2_with_one_line(tmp_path, ckpt, capsys):
    inp = tmp_path / "hr"
    write_images(inp, 1, 16)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not a checkpoint")
    truncated = tmp_path / "cut.safetensors"
    data = ckpt.read_bytes()
    truncated.write_bytes(data[: len(data) - 500])
    wrong = tmp_path / "disc.safetensors"
    save_file({k: v.contiguous() for k, v in Discriminator().state_dict().items()}, str(wrong))
    wrong_shape = tmp_path / "wide.safetensors"
    save_generator(Generator(GeneratorConfig(n_res_blocks=2, channels=8)), wrong_shape, step=0, scale=2)
    tensors = {k: v for k, v in load_generator(wrong_shape)[0].state_dict().items()}
    tensors["block_input.0.weight"] = torch.zeros(16, 3, 3, 3)  # metadata says 8 channels
    save_file(tensors, str(wrong_shape), metadata={"scale": "2", "n_res_blocks": "2", "channels": "8"})
    sentinel = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (sentinel,))

    pth = tmp_path / "generator.pth"
    pth.write_bytes(pickle.dumps({"state": Payload()}))
    for bad in (text, truncated, wrong, wrong_shape, pth, tmp_path / "missing.safetensors"):
        code, err = _cli_error(["degrade", str(inp), str(tmp_path / "out"), "--checkpoint", str(bad)], capsys)
        assert code == 2, (bad, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and str(bad) in err, err
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_degrade_without_checkpoint_uses_runs_idphoto_first(tmp_path, ckpt):
    (tmp_path / "runs" / "idphoto").mkdir(parents=True)
    shutil.copy(ckpt, tmp_path / "runs" / "idphoto" / "generator.safetensors")
    (tmp_path / "runs" / "newer").mkdir()
    small_generator_file(tmp_path / "runs" / "newer" / "generator.safetensors", seed=7)  # newer, but idphoto wins
    srcs = write_images(tmp_path / "hr", 2, 32)
    res = run_cli("degrade", "./hr", "./lr_fake", cwd=tmp_path)  # the usage line, literally
    assert res.returncode == 0, res.stderr
    assert "using checkpoint runs/idphoto/generator.safetensors" in res.stderr
    for src in srcs:
        assert np.array_equal(read(tmp_path / "lr_fake" / src.name), expected_output(ckpt, src))


@pytest.mark.slow
def test_degrade_without_checkpoint_uses_the_only_run(tmp_path):
    only = small_generator_file(tmp_path / "runs" / "faces-v2" / "generator.safetensors", seed=3)
    srcs = write_images(tmp_path / "hr", 1, 32)
    res = run_cli("degrade", "./hr", "./lr_fake", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "runs/faces-v2/generator.safetensors" in res.stderr
    assert np.array_equal(read(tmp_path / "lr_fake" / srcs[0].name), expected_output(only, srcs[0]))


@pytest.mark.slow
def test_degrade_without_checkpoint_none_or_several_is_one_line_error(tmp_path):
    write_images(tmp_path / "hr", 1, 32)
    res = run_cli("degrade", "./hr", "./lr_fake", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "runs/idphoto/generator.safetensors" in res.stderr and "--checkpoint" in res.stderr
    a = small_generator_file(tmp_path / "runs" / "a" / "generator.safetensors", seed=1)
    small_generator_file(tmp_path / "runs" / "b" / "generator.safetensors", seed=2)
    os.utime(a, (1_000_000_000, 1_000_000_000))  # b is newer and is listed first
    res = run_cli("degrade", "./hr", "./lr_fake", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "2 trained generators" in res.stderr and "--checkpoint" in res.stderr
    assert res.stderr.index("runs/b/generator.safetensors") < res.stderr.index("runs/a/generator.safetensors")
    assert not (tmp_path / "lr_fake").exists()


@pytest.mark.slow
def test_two_processes_write_each_file_once(tmp_path, ckpt):
    inp, out = tmp_path / "hr", tmp_path / "out"
    srcs = write_images(inp, 5, 16) + write_images(inp / "b", 2, 12, seed=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", DSGAN_OFFLINE="1")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # --multi_gpu selects accelerate's torchrun launcher; with no GPU visible the
    # processes use the gloo backend on the CPU (``--cpu`` alone starts one process).
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "dsgan_cli",
        "degrade",
        str(inp),
        str(out),
        "--checkpoint",
        str(ckpt),
        "--json",
        "--no-progress",
        "--cpu",
    ]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)  # printed once, by the main process only
    assert summary["processes"] == 2 and summary["written"] == len(srcs) and summary["skipped"] == 0
    outs = sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name not in (".dsgan-degrade.json", ".dsgan.lock")
    )
    assert outs == sorted(s.relative_to(inp).with_suffix(".png").as_posix() for s in srcs)
    for s in srcs:
        assert np.array_equal(read(out / s.relative_to(inp).with_suffix(".png")), expected_output(ckpt, s))


def _io_threads() -> list[str]:
    """Names of live threads the degrade pipeline starts (input thread, encoder pool)."""
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith(("dsgan-input", "dsgan-encode"))]


class InjectedFailure(Exception):
    """An unexpected error (not one a single image can cause): the run must stop cleanly."""


@pytest.mark.parametrize("where", ["generator", "input"])
def test_error_mid_run_stops_every_thread_and_leaves_no_temp_files(tmp_path, ckpt, monkeypatch, where):
    from dsgan_cli.engines import generate, input_batches

    inp, out = tmp_path / "hr", tmp_path / "out"
    write_images(inp, 8, 32, noise=4)
    calls = []
    if where == "generator":
        real = generate.run_generator

        def failing(*a, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise InjectedFailure("injected failure")
            return real(*a, **kw)

        monkeypatch.setattr(generate, "run_generator", failing)
    else:
        real_item = input_batches.DecodeDataset.__getitem__

        def failing_item(self, i):
            if i == 4:
                raise InjectedFailure("injected failure")
            return real_item(self, i)

        monkeypatch.setattr(input_batches.DecodeDataset, "__getitem__", failing_item)
    assert _io_threads() == []
    with pytest.raises(InjectedFailure, match="injected failure"):
        run(inp, out, ckpt, batch_size=1, workers=0, encoder_threads=2)
    assert _io_threads() == []
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    # What was written before the failure is complete, and a rerun finishes the rest.
    monkeypatch.undo()
    summary = run(inp, out, ckpt)
    assert summary.written + summary.skipped == 8 and summary.written >= 1 and not summary.failed


def test_an_image_the_generator_fails_on_fails_alone(tmp_path, ckpt, monkeypatch):
    """G raising for one image of a batch fails that image; the others are written (and equal a normal run's)."""
    from dsgan_cli.engines import generate

    inp = tmp_path / "hr"
    srcs = write_images(inp, 5, 32, noise=4)
    run(inp, tmp_path / "normal", ckpt, batch_size=4, workers=0)
    real = generate.run_generator

    def failing(generator, x, *a, **kw):
        if (x[:, 0, 0, 0] == bad_value).any():
            raise RuntimeError("Padding size should be less than the corresponding input dimension")
        return real(generator, x, *a, **kw)

    bad = srcs[2]
    from dsgan_cli.data.images import image_to_tensor, load_rgb
    from dsgan_cli.method.models import downscale

    bad_value = downscale(image_to_tensor(load_rgb(bad)[0])[None], 2)[0, 0, 0, 0].item()
    monkeypatch.setattr(generate, "run_generator", failing)
    summary = run(inp, tmp_path / "out", ckpt, batch_size=4, workers=0)
    assert [p for p, _ in summary.failed] == [str(bad)] and "generator cannot process" in summary.failed[0][1]
    assert summary.written == 4
    for src in srcs:
        if src != bad:
            assert (tmp_path / "out" / src.name).read_bytes() == (tmp_path / "normal" / src.name).read_bytes()


def _oom_above(monkeypatch, too_big) -> list[tuple[int, ...]]:
    """Make the generator call raise torch's out-of-memory error for inputs ``too_big(shape)`` says are too big."""
    from dsgan_cli.engines import generate

    real, shapes = generate.run_generator, []

    def limited(generator, x, *a, **kw):
        shapes.append(tuple(x.shape))
        if too_big(x.shape):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(generator, x, *a, **kw)

    monkeypatch.setattr(generate, "run_generator", limited)
    return shapes


def test_out_of_memory_splits_the_batch_and_gives_the_same_bytes(tmp_path, ckpt, monkeypatch):
    inp = tmp_path / "hr"
    srcs = write_images(inp, 6, 32, noise=8)
    run(inp, tmp_path / "normal", ckpt, batch_size=4, workers=0)
    shapes = _oom_above(monkeypatch, lambda s: s[0] > 1)
    summary = run(inp, tmp_path / "oom", ckpt, batch_size=4, workers=0)
    assert summary.written == 6 and not summary.failed
    assert (4, 3, 16, 16) in shapes and (1, 3, 16, 16) in shapes  # a batch was refused, then split
    for src in srcs:
        assert (tmp_path / "oom" / src.name).read_bytes() == (tmp_path / "normal" / src.name).read_bytes()


def test_out_of_memory_for_one_image_falls_back_to_tiles(tmp_path, ckpt, monkeypatch):
    inp = tmp_path / "hr"
    srcs = write_images(inp, 2, 256, noise=8)
    run(inp, tmp_path / "normal", ckpt, batch_size=2, workers=0)
    # LR images are 128x128 and G's receptive radius is 6: a side over 80 runs out of memory, so batches and whole
    # images fail and 64-pixel tiles (windows of at most 64 + 6 at the border) fit.
    shapes = _oom_above(monkeypatch, lambda s: s[0] > 1 or max(s[-2:]) > 80)
    summary = run(inp, tmp_path / "oom", ckpt, batch_size=2, workers=0)
    assert summary.written == 2 and not summary.failed
    assert (1, 3, 128, 128) in shapes and max(max(s[-2:]) for s in shapes[-4:]) <= 80  # refused whole, then tiled
    for src in srcs:
        a, b = read(tmp_path / "normal" / src.name).astype(int), read(tmp_path / "oom" / src.name).astype(int)
        # As test_tiled_folder_run_matches_untiled: equal up to float summation order.
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.001


def test_out_of_memory_even_for_small_tiles_is_a_one_line_error(tmp_path, ckpt, monkeypatch):
    inp = tmp_path / "hr"
    write_images(inp, 1, 80)
    _oom_above(monkeypatch, lambda s: True)
    with pytest.raises(DsganError, match="out of memory"):
        run(inp, tmp_path / "out", ckpt, workers=0)
    assert _io_threads() == []


def test_other_runtime_errors_are_not_taken_for_out_of_memory(ckpt):
    from dsgan_cli.engines.generate import is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(
        RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes; out of memory")
    )
    assert not is_oom(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_oom(ValueError("out of memory"))
