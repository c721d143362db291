"""Hostile use: outputs aimed into inputs, colliding names, stale outputs, special files, forged checkpoints.

Every case runs the real CLI on real files and checks that nothing a user
owns is lost (input trees are hashed before and after), that nothing hangs,
and that refusals are one line naming the file with exit code 2.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from badfiles import run_cli_many, tree_digest
from conftest import write_images
from PIL import Image
from test_bad_inputs import one_line_error

from dsgan_cli.data import images
from dsgan_cli.engines.checkpoint import save_generator
from dsgan_cli.method.models import Generator, GeneratorConfig
from dsgan_cli.plumbing import writes
from dsgan_cli.plumbing.errors import DsganError

#: Longest legal file name on common Linux file systems (NAME_MAX) minus one.
LONG_STEM = "n" * 250  # + ".png" = 254 bytes


@pytest.fixture(scope="module")
def gens(tmp_path_factory) -> dict[str, Path]:
    """Two different tiny generators (scale 2)."""
    root = tmp_path_factory.mktemp("gens")
    out = {}
    for name, seed in (("g1", 0), ("g2", 1)):
        torch.manual_seed(seed)
        g = Generator(GeneratorConfig(n_res_blocks=1, channels=8))
        out[name] = root / f"{name}.safetensors"
        save_generator(g, out[name], step=1, scale=2)
    return out


def degrade_args(inp, out, ckpt, *extra):
    return ["degrade", inp, out, "--checkpoint", ckpt, "--no-progress", *extra]


def face_photo(size: int = 256) -> Image.Image:
    """A real portrait (scikit-image's astronaut) resized to ``size``."""
    skdata = pytest.importorskip("skimage.data")
    return Image.fromarray(skdata.astronaut()).resize((size, size), Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------- A: outputs inside the input tree


@pytest.mark.slow
def test_degrade_output_folder_ancestor_of_input_is_refused(tmp_path, gens):
    """Input P/data holding data/data/: output P would put data/data/x's output onto the input data/x."""
    inp = tmp_path / "data"
    write_images(inp, 2, 16, seed=1)
    write_images(inp / "data", 2, 16, seed=2)  # same names one level down
    before = tree_digest(tmp_path)
    plain, forced = run_cli_many([degrade_args(inp, tmp_path, gens["g1"]), degrade_args(inp, tmp_path, gens["g1"], "--overwrite")])
    for res in (plain, forced):
        assert res.returncode == 2, res.stderr
        one_line_error(res.stderr, "inside an input folder")
    assert tree_digest(tmp_path) == before


@pytest.mark.slow
def test_degrade_symlinked_output_subfolder_into_input_is_refused(tmp_path, gens):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_images(inp / "sub", 2, 16, seed=1)
    out.mkdir()
    os.symlink("../in/sub", out / "sub")
    before = tree_digest(tmp_path)
    (res,) = run_cli_many([degrade_args(inp, out, gens["g1"], "--overwrite")])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(out / "sub"), "inside an input folder")
    assert tree_digest(tmp_path) == before


def test_prepare_output_folder_ancestor_of_input_is_refused(tmp_path):
    raw = tmp_path / "raw"
    (raw / "raw").mkdir(parents=True)
    face_photo().save(raw / "face.png")
    face_photo().rotate(5).save(raw / "raw" / "face.png")  # its crop would be P/raw/face.png: an input
    before = tree_digest(tmp_path)
    (res,) = run_cli_many([["prepare", raw, "--out", tmp_path, "--size", "64", "--workers", "1", "--no-progress", "--overwrite"]])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, "inside an input folder")
    assert tree_digest(tmp_path) == before


def test_check_destinations_unit(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "out" / "alias")
    writes.check_destinations([tmp_path / "out" / "a.png"], [tmp_path / "in"])
    for bad in (tmp_path / "out" / "alias" / "a.png", tmp_path / "in" / "x" / "b.png"):
        with pytest.raises(DsganError, match="inside an input folder"):
            writes.check_destinations([bad], [tmp_path / "in"])
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x")
    with pytest.raises(DsganError, match="input file"):
        writes.check_destinations([outside], [tmp_path / "in"], [outside])


# ----------------------------------------------------------------------------- B: two inputs, one output


@pytest.mark.slow
def test_prepare_names_that_would_collide_are_refused_not_merged(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    photos = {"photo.PNG": 0, "photo.png": 4, "a.png": 8, "a.jpg": 12, "a_png.png": 16}
    for name, angle in photos.items():
        face_photo().rotate(angle, fillcolor=(128, 128, 128)).save(raw / name, format="JPEG" if name.endswith("jpg") else "PNG")
    before = tree_digest(raw)
    out = tmp_path / "out"
    (res,) = run_cli_many([["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress", "--json"]])
    assert res.returncode == 1, res.stderr
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    outputs = [r["output"] for r in records if r["output"] is not None]
    assert len(outputs) == len(set(o.casefold() for o in outputs)), outputs  # no crop is shared
    summary = json.loads(res.stdout)
    crops = sorted(p.name for p in out.glob("*.png"))
    assert summary["written"] == len(crops) == len(outputs), (summary, crops)
    clashes = {r["input"]: r["reason"] for r in records if r["status"] == "name_clash"}
    # In sorted order the first input keeps the name: a.jpg owns a.png, photo.PNG owns photo.png.
    assert set(clashes) == {"photo.png", "a.png"}, clashes
    for name, reason in clashes.items():
        assert "already the output of" in reason
        assert name in res.stderr
    assert tree_digest(raw) == before


@pytest.mark.slow
def test_degrade_names_differing_in_case_do_not_share_an_output(tmp_path, gens):
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(np.full((16, 16, 3), 30, np.uint8)).save(inp / "x.PNG", format="PNG")
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(inp / "x.png")
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", gens["g1"], "--json")])
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["written"] == 1 and len(summary["failed"]) == 1
    assert "same stem" in summary["failed"][0]["reason"]


# ----------------------------------------------------------------------------- C: stale outputs


@pytest.mark.slow
def test_degrade_rerun_with_another_generator_is_refused_without_overwrite(tmp_path, gens):
    inp, out, ref = tmp_path / "in", tmp_path / "out", tmp_path / "ref"
    write_images(inp, 3, 16, seed=4)
    first, second, forced, clean = run_cli_many(
        [
            degrade_args(inp, out, gens["g1"]),
            degrade_args(inp, out, gens["g2"]),
            degrade_args(inp, out, gens["g2"], "--overwrite"),
            degrade_args(inp, ref, gens["g2"]),
        ]
    )
    assert first.returncode == 0, first.stderr
    assert second.returncode == 2, second.stderr
    one_line_error(second.stderr, ".dsgan-degrade.json", "another generator", "--overwrite")
    assert forced.returncode == 0 and clean.returncode == 0, (forced.stderr, clean.stderr)
    for p in sorted(ref.glob("*.png")):
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name  # g2's pixels, not g1's
    (again,) = run_cli_many([degrade_args(inp, out, gens["g2"])])
    assert again.returncode == 0 and "skipped 3" in again.stderr, again.stderr


def test_degrade_interrupted_overwrite_is_still_refused(tmp_path, gens):
    """Until an --overwrite run completes, the record says earlier outputs may remain: a plain rerun is refused."""
    from dsgan_cli.commands.degrade import RUN_RECORD
    from dsgan_cli.plumbing.output_record import output_record, write_output_record

    out = tmp_path / "out"
    out.mkdir()
    record = output_record("ab" * 32, 2, ".png", None)
    write_output_record(out / RUN_RECORD, record, replacing=True)
    from dsgan_cli.plumbing.output_record import check_output_record

    with pytest.raises(DsganError, match="did not finish"):
        check_output_record(out / RUN_RECORD, record, overwrite=False)
    assert json.loads((out / RUN_RECORD).read_text())["replacing_earlier_outputs"] is True


@pytest.mark.slow
def test_prepare_rerun_with_other_settings_is_refused_then_replaced(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / "face.png")
    out = tmp_path / "out"
    base = ["prepare", raw, "--out", out, "--workers", "1", "--no-progress"]
    first, other_size, other_margin, forced = run_cli_many(
        [
            [*base, "--size", "64"],
            [*base, "--size", "32"],
            [*base, "--size", "64", "--margin", "0.3"],
            [*base, "--size", "32", "--overwrite"],
        ]
    )
    assert first.returncode == 0, first.stderr
    for res in (other_size, other_margin):
        assert res.returncode == 2, res.stderr
        one_line_error(res.stderr, ".dsgan-prepare.json", "other settings")
    assert forced.returncode == 0, forced.stderr
    assert Image.open(out / "face.png").size == (32, 32)
    rec = json.loads((out / "manifest.jsonl").read_text())
    assert rec["settings"]["size"] == 32


@pytest.mark.slow
def test_prepare_changed_photo_replaces_its_crop(tmp_path):
    """Same settings, edited input: the record is recomputed and so is the crop on disk."""
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / "face.png")
    out = tmp_path / "out"
    args = ["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress"]
    (first,) = run_cli_many([args])
    assert first.returncode == 0, first.stderr
    old = (out / "face.png").read_bytes()
    face_photo().rotate(10, fillcolor=(90, 90, 90)).save(raw / "face.png")
    (second,) = run_cli_many([args])
    assert second.returncode == 0, second.stderr
    (ref,) = run_cli_many([["prepare", raw, "--out", tmp_path / "ref", "--size", "64", "--workers", "1", "--no-progress"]])
    assert (out / "face.png").read_bytes() != old
    assert (out / "face.png").read_bytes() == (tmp_path / "ref" / "face.png").read_bytes()


# ----------------------------------------------------------------------------- D: cache keyed on content


@pytest.mark.slow
def test_eval_cache_is_keyed_on_content_not_names_sizes_mtimes(tmp_path):
    fake, real_a, real_b = tmp_path / "fake", tmp_path / "real_a", tmp_path / "real_b"
    write_images(fake, 3, 16, seed=1)
    a = write_images(real_a, 3, 16, seed=2, suffix=".bmp")
    b = write_images(real_b, 3, 16, seed=2, noise=40, suffix=".bmp")  # BMP: same byte size whatever the pixels
    for pa, pb in zip(a, b):
        assert pa.name == pb.name and pa.stat().st_size == pb.stat().st_size
        st = pa.stat()
        os.utime(pb, ns=(st.st_atime_ns, st.st_mtime_ns))
    cache = tmp_path / "cache"
    cases = [
        ["eval", fake, real, "--no-fid", "--cache-dir", c, "--json", tmp_path / f"{n}.json", "--plot", tmp_path / f"{n}.png"]
        for n, real, c in (("a", real_a, cache), ("b", real_b, cache), ("b_clean", real_b, tmp_path / "cache2"))
    ]
    for res in run_cli_many(cases, cwd=tmp_path):
        assert res.returncode == 0, res.stderr
    rep = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("a", "b", "b_clean")}
    assert rep["b"]["real_stats_cached"] is False
    noise = {n: r["frequency"]["sets"]["real"]["noise"] for n, r in rep.items()}
    assert noise["b"] == noise["b_clean"] and abs(noise["b"] - noise["a"]) > 5, noise


# ----------------------------------------------------------------------------- E: special files


@pytest.mark.slow
def test_fifo_in_eval_folder_is_listed_not_waited_on(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 16, seed=1)
    write_images(real, 3, 16, seed=2)
    os.mkfifo(fake / "pipe.png")
    os.symlink(real / "gone.png", real / "dangling.png")
    before = tree_digest(tmp_path)
    (res,) = run_cli_many(
        [["eval", fake, real, "--no-fid", "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png", "--cache-dir", tmp_path / "cache"]],
        cwd=tmp_path,
        timeout=180,
    )
    assert res.returncode == 1, res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert "pipe.png: not a regular file (a FIFO" in " ".join(data["unreadable"]["fake"])
    assert "dangling.png: dangling symlink" in " ".join(data["unreadable"]["real"])
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before


@pytest.mark.slow
def test_fifo_as_checkpoint_is_refused(tmp_path):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    os.mkfifo(tmp_path / "g.safetensors")
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", tmp_path / "g.safetensors")], timeout=180)
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(tmp_path / "g.safetensors"), "FIFO")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_reports_never_replace_symlinks_or_special_files(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 2, 16, seed=1)
    write_images(real, 2, 16, seed=2)
    keep = tmp_path / "keep.json"
    keep.write_text("user data\n")
    os.symlink(keep, tmp_path / "link.json")
    os.mkfifo(tmp_path / "pipe.png")
    targets = [("--json", tmp_path / "link.json", "a symlink"), ("--plot", tmp_path / "pipe.png", "a FIFO")]
    try:
        os.mknod(tmp_path / "null.png", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets.append(("--plot", tmp_path / "null.png", "character device"))
    except PermissionError:
        pass  # not root: no device node can be made here
    cases = []
    for opt, path, _ in targets:
        other = ["--plot", tmp_path / "p.png"] if opt == "--json" else ["--json", tmp_path / "j.json"]
        cases.append(["eval", fake, real, "--no-fid", opt, path, *other, "--cache-dir", tmp_path / "cache"])
    for (opt, path, kind), res in zip(targets, run_cli_many(cases, cwd=tmp_path, timeout=180)):
        assert res.returncode == 2, (opt, res.stderr)
        one_line_error(res.stderr, str(path), kind)
    assert os.readlink(tmp_path / "link.json") == str(keep) and keep.read_text() == "user data\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.png").st_mode)
    if len(targets) == 3:
        assert stat.S_ISCHR(os.lstat(tmp_path / "null.png").st_mode)
    assert not (tmp_path / "j.json").exists() and not (tmp_path / "p.png").exists()  # refused before the work


def test_atomic_writer_refuses_to_replace_a_symlink(tmp_path):
    target = tmp_path / "target.png"
    target.write_bytes(b"user")
    os.symlink(target, tmp_path / "link.png")
    with pytest.raises(DsganError, match="symlink"):
        writes.write_bytes_atomic(tmp_path / "link.png", b"new")
    assert os.path.islink(tmp_path / "link.png") and target.read_bytes() == b"user"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "target.png"]


@pytest.mark.slow
def test_prepare_dangling_symlink_is_listed_and_the_run_completes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / "face.png")
    os.symlink(raw / "missing.png", raw / "broken.png")
    os.mkfifo(raw / "pipe.jpg")
    out = tmp_path / "out"
    (res,) = run_cli_many([["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress"]], timeout=300)
    assert res.returncode == 1, res.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["broken.png"]["status"] == "unreadable" and "dangling symlink" in records["broken.png"]["reason"]
    assert records["pipe.jpg"]["status"] == "unreadable" and "FIFO" in records["pipe.jpg"]["reason"]
    assert records["face.png"]["status"] in ("ok", "several_faces")


# ----------------------------------------------------------------------------- F: hostile checkpoint metadata


def _forged(folder: Path, name: str, *, meta: dict | None = None, nan: bool = False) -> Path:
    from safetensors.torch import save as st_save

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(n_res_blocks=1, channels=8))
    tensors = {k: v.detach().clone().contiguous() for k, v in g.state_dict().items()}
    if nan:
        tensors["block_input.0.weight"][0, 0, 0, 0] = float("nan")
    metadata = {
        "format": "dsgan-generator/1",
        "step": "1",
        "scale": "2",
        "n_res_blocks": "1",
        "channels": "8",
        "recipe": "{}",
        **(meta or {}),
    }
    path = folder / name
    path.write_bytes(st_save(tensors, metadata=metadata))
    return path


@pytest.mark.parametrize(
    "name, meta, nan, must",
    [
        ("neg_scale", {"scale": "-2"}, False, "scale=-2"),
        ("huge_blocks", {"n_res_blocks": "50000000"}, False, "n_res_blocks=50000000"),
        ("huge_channels", {"channels": "2000000"}, False, "channels=2000000"),
        ("nan_weights", None, True, "not finite"),
    ],
)
@pytest.mark.slow
def test_hostile_checkpoint_metadata_is_refused_before_building(tmp_path, name, meta, nan, must):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    ckpt = _forged(tmp_path, f"{name}.safetensors", meta=meta, nan=nan)
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", ckpt)], timeout=120)
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(ckpt), must)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- G: long names


@pytest.mark.slow
def test_degrade_converts_a_254_byte_file_name(tmp_path, gens):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    name = LONG_STEM + ".png"
    assert len(name.encode()) == 254
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(inp / name)
    (res,) = run_cli_many([degrade_args(inp, out, gens["g1"], "--json")])
    assert res.returncode == 0, res.stderr
    assert Image.open(out / name).size == (8, 8)
    assert [p.name for p in out.iterdir() if p.name.endswith(".partial")] == []


def test_partial_names_fit_the_name_limit(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for n in (1, 100, limit - 4, limit):
        name = ("é" * n).encode()[:limit].decode(errors="ignore") or "x"
        prefix = writes.partial_prefix(tmp_path / name)
        assert len(os.fsencode(prefix)) + 8 + len(".partial") <= limit
        writes.write_bytes_atomic(tmp_path / name, b"ok")
        assert (tmp_path / name).read_bytes() == b"ok"


@pytest.mark.slow
def test_prepare_long_name_does_not_abort_the_run(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    face_photo().save(raw / (LONG_STEM + ".png"))
    write_images(raw, 1, 16)
    out = tmp_path / "out"
    (res,) = run_cli_many([["prepare", raw, "--out", out, "--size", "64", "--workers", "1", "--no-progress"]])
    assert res.returncode == 0, res.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records[LONG_STEM + ".png"]["status"] in ("ok", "several_faces")
    assert Image.open(out / (LONG_STEM + ".png")).size == (64, 64)


# ----------------------------------------------------------------------------- J: modes and durability


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_umask_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        writes.write_bytes_atomic(tmp_path / "a.bin", b"x")
        writes.save_image_atomic(Image.new("RGB", (2, 2)), tmp_path / "b.png")
        save_generator(Generator(GeneratorConfig(n_res_blocks=1, channels=8)), tmp_path / "g.safetensors", step=0, scale=2)
    finally:
        os.umask(old)
    for name in ("a.bin", "b.png", "g.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


@pytest.mark.slow
def test_degrade_outputs_follow_the_umask(tmp_path, gens):
    inp = tmp_path / "in"
    write_images(inp, 2, 16)
    code = "import os, sys; os.umask(0o022); from dsgan_cli.cli import main; main(sys.argv[1:])"
    env = dict(os.environ, DSGAN_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", code, "degrade", str(inp), str(tmp_path / "out"), "--checkpoint", str(gens["g1"]), "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    files = [p for p in (tmp_path / "out").iterdir()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), [oct(p.stat().st_mode) for p in files]


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino, os.path.exists(tmp_path / "f.bin")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    writes.write_bytes_atomic(tmp_path / "f.bin", b"data")
    folder = (True, tmp_path.stat().st_ino, True)
    assert folder in synced and synced.index(folder) == len(synced) - 1, synced


# ----------------------------------------------------------------------------- K: Ctrl-C


@pytest.mark.parametrize(
    "command, hint",
    [("degrade", "run the same command again"), ("pairs", "run the same command again"), ("train", "run the same command again")],
)
@pytest.mark.slow
def test_ctrl_c_says_what_stopped_and_how_to_resume(tmp_path, gens, tiny_recipe, command, hint):
    """A real SIGINT, delivered at a fixed point of the run (the start of the work), not at a random time."""
    inp = tmp_path / "in"
    write_images(inp, 2, 16)
    write_images(tmp_path / "lr", 2, 8, seed=3)
    if command in ("degrade", "pairs"):
        argv = [command, inp, tmp_path / "out", "--checkpoint", gens["g1"], "--no-progress"]
        hook = "import dsgan_cli.engines.inference as m; name = 'process_jobs'"
    else:
        argv = [
            "train",
            tiny_recipe,
            "--no-progress",
            "--set",
            f"data.hr_dir={inp}",
            "--set",
            f"data.lr_dir={tmp_path / 'lr'}",
            "--set",
            f"train.output_dir={tmp_path / 'run'}",
            "--set",
            "loss.w_perceptual=0",
        ]
        hook = "import dsgan_cli.engines.train as m; name = 'load_data'"
    # A shell started in the background ignores SIGINT for its children; a terminal's foreground job does not.
    code = (
        f"import os, signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n{hook}\n"
        "orig = getattr(m, name)\n"
        "def hooked(*a, **k):\n    os.kill(os.getpid(), signal.SIGINT)\n    return orig(*a, **k)\n"
        "setattr(m, name, hooked)\nfrom dsgan_cli.cli import main\nmain(sys.argv[1:])\n"
    )
    env = dict(os.environ, DSGAN_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 130, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1 and command in lines[0] and hint in lines[0], res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- H: bad values are usage errors up front


H_RECIPE_CASES = [
    ("optim.beta1=1.0", "optim.beta1"),
    ("optim.beta2=1.0", "optim.beta2"),
    ("train.seed=4294967296", "train.seed"),
    ("model.filter_kernel=41", "model.filter_kernel"),
    ("data.crop_size=2", "model.filter_kernel"),
    ("optim.lr=inf", "optim.lr"),
    ("loss.w_gan=inf", "loss.w_gan"),
    ('train.output_dir=""', "train.output_dir"),
]


@pytest.mark.slow
def test_bad_recipe_values_exit_2_before_training(tmp_path, tiny_recipe):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    work = tmp_path / "work"
    work.mkdir()
    before = tree_digest(tmp_path)
    base = [
        "train",
        tiny_recipe,
        "--no-progress",
        "--set",
        f"data.hr_dir={hr}",
        "--set",
        f"data.lr_dir={lr}",
        "--set",
        "train.iterations=1",
        "--set",
        "train.batch_size=2",
        "--set",
        "loss.w_perceptual=0",
    ]
    cases = [
        [*base, "--set", f"train.output_dir={tmp_path / 'runs' / str(i)}", "--set", override]
        for i, (override, _) in enumerate(H_RECIPE_CASES)
    ]
    for (override, key), res in zip(H_RECIPE_CASES, run_cli_many(cases, cwd=work)):
        assert res.returncode == 2, (override, res.stderr[-2000:])
        one_line_error(res.stderr, key)
    assert tree_digest(tmp_path) == before  # no run folder, nothing in the current folder


@pytest.mark.slow
def test_prepare_margin_nan_is_a_usage_error(tmp_path):
    raw = tmp_path / "raw"
    write_images(raw, 1, 16)
    (res,) = run_cli_many([["prepare", raw, "--out", tmp_path / "out", "--margin", "nan", "--no-progress"]])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, "--margin")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_unwritable_json_fails_before_the_work(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 2, 16, seed=1)
    write_images(real, 2, 16, seed=2)
    (tmp_path / "file").write_text("a file, not a folder\n")
    target = tmp_path / "file" / "r.json"
    (res,) = run_cli_many(
        [["eval", fake, real, "--no-fid", "--json", target, "--plot", tmp_path / "p.png", "--cache-dir", tmp_path / "cache"]], cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(target))
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "cache").exists()  # nothing was computed


# ----------------------------------------------------------------------------- I: one training per folder, lineage, resume checks


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


@pytest.fixture
def train_data(tmp_path):
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    return hr, lr


@pytest.fixture
def zygote(tmp_path):
    from badfiles import Zygote

    z = Zygote(tmp_path / "zlogs")
    yield z
    z.close()


def _wait_for(path: Path, child) -> bool:
    """Poll until ``path`` exists; False when the child ended first (no time limit: the child's own progress decides)."""
    import time

    while not path.exists():
        if child.done():
            return path.exists()
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_second_training_in_a_busy_run_folder_is_refused(tmp_path, tiny_recipe, train_data, zygote):
    hr, lr = train_data
    out = tmp_path / "run"
    ready, go = tmp_path / "ready", tmp_path / "go"
    # The first run pauses right after taking the folder (a file handshake, no timing).
    prelude = (
        f"import pathlib, time, dsgan_cli.engines.train as t\norig = t.start_run\n"
        f"def held(*a, **k):\n    d = orig(*a, **k)\n    pathlib.Path({str(ready)!r}).touch()\n"
        f"    while not pathlib.Path({str(go)!r}).exists():\n        time.sleep(0.02)\n    return d\n"
        "t.start_run = held\n"
    )
    first = zygote.start(train_args(tiny_recipe, hr, lr, out, "train.iterations=2"), prelude=prelude)
    assert _wait_for(ready, first), first.wait().stderr
    (second,) = run_cli_many([train_args(tiny_recipe, hr, lr, out, "train.iterations=2")], cwd=tmp_path)
    go.touch()
    done = first.wait()
    assert second.returncode == 2, second.stderr
    one_line_error(second.stderr, str(out), "another training is running")
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoints" / "step_00000002").is_dir()


@pytest.mark.slow
def test_lock_of_a_killed_training_is_released(tmp_path, tiny_recipe, train_data, zygote):
    hr, lr = train_data
    out = tmp_path / "run"
    prelude = (
        "import os, signal, dsgan_cli.engines.train as t\norig = t.start_run\n"
        "def die(*a, **k):\n    orig(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.start_run = die\n"
    )
    killed = zygote.run(train_args(tiny_recipe, hr, lr, out, "train.iterations=1"), prelude=prelude)
    assert killed.returncode == -9
    (again,) = run_cli_many([train_args(tiny_recipe, hr, lr, out, "train.iterations=1")], cwd=tmp_path)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_resume_latest_follows_the_resumed_branch(tmp_path, tiny_recipe, train_data):
    hr, lr = train_data
    out = tmp_path / "run"
    base = train_args(tiny_recipe, hr, lr, out, "train.checkpoint_every=1", "train.keep_last=10")
    first, branch, latest = run_cli_many(
        [
            [*base, "--set", "train.iterations=4"],
            [*base, "--set", "train.iterations=3", "--resume", out / "checkpoints" / "step_00000002"],
            [*base, "--set", "train.iterations=5", "--resume", "latest"],
        ],
        cwd=tmp_path,
        timeout=1200,
    )
    for res in (first, branch, latest):
        assert res.returncode == 0, res.stderr
    assert "step_00000003" in latest.stdout and "step_00000004" not in latest.stdout, latest.stdout
    aside = out / "abandoned" / "after_step_00000002" / "step_00000004"
    assert (aside / "trainer_state.json").is_file()  # moved aside, not deleted
    assert str(out / "abandoned") in branch.stderr


@pytest.mark.slow
def test_resume_refuses_changed_model_or_data_and_keeps_the_first_recipe(tmp_path, tiny_recipe, train_data):
    hr, lr = train_data
    out = tmp_path / "run"
    base = train_args(tiny_recipe, hr, lr, out, "train.checkpoint_every=1")
    (first,) = run_cli_many([[*base, "--set", "train.iterations=2"]], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    recipe_before = (out / "recipe.json").read_bytes()
    flip, crop, soft = run_cli_many(
        [
            [*base, "--set", "train.iterations=3", "--set", "data.flip=true", "--resume", "latest"],
            [*base, "--set", "train.iterations=3", "--set", "data.crop_size=8", "--resume", "latest"],
            [*base, "--set", "train.iterations=3", "--set", "train.log_every=2", "--resume", "latest"],
        ],
        cwd=tmp_path,
    )
    for res, key in ((flip, "data.flip"), (crop, "data.crop_size")):
        assert res.returncode == 2, res.stderr
        one_line_error(res.stderr, "cannot resume exactly", key)
    assert soft.returncode == 0, soft.stderr
    assert "warning: resuming with changed" in soft.stderr and "train.log_every" in soft.stderr
    assert (out / "recipe.json").read_bytes() == recipe_before
    # Same recipe, other pixels in one HR image: the data changed.
    img = np.asarray(Image.open(hr / "img_000.png")).copy()
    img[0, 0] = 255 - img[0, 0]
    Image.fromarray(img).save(hr / "img_000.png")
    (data,) = run_cli_many([[*base, "--set", "train.iterations=4", "--resume", "latest"]], cwd=tmp_path)
    assert data.returncode == 2, data.stderr
    one_line_error(data.stderr, "cannot resume exactly", "images")


# ----------------------------------------------------------------------------- L: formats, deep TIFFs, nothing created on failure


@pytest.mark.slow
def test_gif_avif_and_disguised_eps_are_listed_not_ignored_or_decoded(tmp_path, gens):
    inp = tmp_path / "in"
    write_images(inp, 1, 16)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(inp / "anim.gif")
    (inp / "photo.avif").write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf")
    # An EPS file named .png: a Pillow plugin would hand it to Ghostscript.
    (inp / "vector.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto showpage\n")
    (res,) = run_cli_many([degrade_args(inp, tmp_path / "out", gens["g1"], "--json")])
    assert res.returncode == 1, res.stderr
    failed = {Path(f["path"]).name: f["reason"] for f in json.loads(res.stdout)["failed"]}
    assert "GIF files are not supported" in failed["anim.gif"]
    assert "AVIF files are not supported" in failed["photo.avif"]
    assert "unrecognised format" in failed["vector.png"] and "ghostscript" not in failed["vector.png"].lower()


@pytest.mark.parametrize(
    "mode, values, expected", [("F", [0.0, 250.0, 500.0, 1000.0], [0, 64, 128, 255]), ("I", [0, 70000, 140000, 280000], [0, 64, 128, 255])]
)
def test_float_and_int32_tiffs_are_rescaled_not_clipped(tmp_path, mode, values, expected):
    arr = np.array([values], dtype=np.float32 if mode == "F" else np.int32)
    path = tmp_path / f"deep_{mode}.tif"
    Image.fromarray(arr, mode).save(path)
    img, converted = images.load_rgb(path)
    assert converted == mode
    assert np.asarray(img)[0, :, 0].tolist() == expected


@pytest.mark.slow
def test_failed_usage_checks_create_nothing(tmp_path, gens, tiny_recipe, train_data):
    hr, lr = train_data
    before = tree_digest(tmp_path)
    deg, tr = run_cli_many(
        [
            degrade_args(hr, tmp_path / "out", gens["g1"], "--batch-size", "0"),
            train_args(tiny_recipe, hr, lr, tmp_path / "run", "loss.w_perceptual=0.01", "perceptual.weights=torchvision"),
        ],
        cwd=tmp_path,
    )
    assert deg.returncode == 2, deg.stderr
    one_line_error(deg.stderr, "--batch-size")
    assert tr.returncode == 2, tr.stderr
    one_line_error(tr.stderr, "VGG19")
    assert tree_digest(tmp_path) == before  # no output folder, no run folder, no logs/


def test_a_symlink_at_the_run_folders_lock_is_refused_not_followed(tmp_path):
    from dsgan_cli.engines.rundir import LOCK_FILE, lock_run_folder

    victim = tmp_path / "img_0.png"
    victim.write_bytes(b"precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(DsganError, match="lock"):
        lock_run_folder(out)
    assert victim.read_bytes() == b"precious"


@pytest.mark.slow
def test_eval_json_inside_an_input_set_is_refused_and_the_image_kept(tmp_path):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 32)
    write_images(real, 3, 32, seed=1)
    before = (real / "img_000.png").read_bytes()
    (res,) = run_cli_many([["eval", fake, real, "--no-fid", "--json", real / "img_000.png", "--plot", tmp_path / "s.png"]])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(real / "img_000.png"), "inside the input folder")
    assert (real / "img_000.png").read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing_array", "wrong_shape", "nan"])
def test_a_damaged_statistics_cache_entry_is_recomputed_not_used(tmp_path, damage):
    from safetensors.numpy import load_file, save_file

    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 16, seed=1)
    write_images(real, 3, 16, seed=2, noise=20)
    cache = tmp_path / "cache"

    def run(name):
        (res,) = run_cli_many(
            [
                [
                    "eval",
                    fake,
                    real,
                    "--no-fid",
                    "--cache-dir",
                    cache,
                    "--json",
                    tmp_path / f"{name}.json",
                    "--plot",
                    tmp_path / f"{name}.png",
                ]
            ],
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        return json.loads((tmp_path / f"{name}.json").read_text())

    first = run("first")
    entries = sorted(cache.glob("frequency-*.safetensors"))
    assert entries
    for entry in entries:
        arrays = load_file(str(entry))
        if damage == "missing_array":
            del arrays["noise_std"]
        elif damage == "wrong_shape":
            arrays["spectrum"] = arrays["spectrum"][:3].reshape(1, 3)
        else:
            arrays["noise"] = np.array([np.nan])
        save_file(arrays, str(entry))
    again = run("again")
    assert again["real_stats_cached"] is False
    assert again["frequency"]["sets"] == first["frequency"]["sets"]


def test_ctrl_c_before_training_began_claims_no_checkpoint():
    from dsgan_cli.cli import interrupted_message

    hint = interrupted_message(["train", "--set", "a.b=1", "learn", "--no-progress"])
    assert "before its first step" in hint and "checkpoint" not in hint and "--resume" not in hint
