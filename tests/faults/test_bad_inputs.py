"""Bad and odd inputs: every one gets a clear one-line reason, and no input is ever changed.

The corpus is generated at run time by :mod:`tests.badfiles`. Foundation
functions are exercised directly; subcommands through real ``python -m
dsgan_cli`` runs (exit codes, one-line messages, tracebacks only with --debug).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badfiles import (
    BAD_IMAGES,
    BLUE,
    ODD_NAMES,
    RED,
    make_bad_checkpoints,
    make_bad_images,
    make_bad_recipes,
    make_named_tree,
    make_odd_images,
    make_symlink_loop,
    pickle_payload,
    run_cli_many,
    tree_digest,
)
from conftest import REPO, one_line_error, write_images
from PIL import Image

from dsgan_cli.data import images
from dsgan_cli.data.images import ImageReadError, list_images, load_rgb
from dsgan_cli.plumbing import writes
from dsgan_cli.plumbing.errors import DsganError
from dsgan_cli.plumbing.writes import check_output_dir, check_writable_dir

# ----------------------------------------------------------------------------- load_rgb on the corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_bad_images(root / "bad")
    make_odd_images(root / "odd")
    return root


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_raises_image_read_error_with_reason(corpus, name):
    path = corpus / "bad" / name
    with pytest.raises(ImageReadError) as info:
        load_rgb(path)
    assert info.value.path == path
    assert BAD_IMAGES[name] in info.value.reason.lower(), info.value.reason
    assert "\n" not in str(info.value)


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError) as info:
        load_rgb(tmp_path / "nope.png")
    assert "no such file" in info.value.reason.lower()


def test_bomb_is_rejected_before_decoding(corpus):
    """The 100000x100000 PNG is only ~100 bytes; decoding it would need 30 GB."""
    assert (corpus / "bad" / "bomb.png").stat().st_size < 200
    with pytest.raises(ImageReadError, match="100000x100000|too large"):
        load_rgb(corpus / "bad" / "bomb.png")


def test_large_real_photo_is_not_called_a_bomb(tmp_path):
    """A 108 MP header (12000x9000, below images.MAX_PIXELS) must not be rejected by Pillow's smaller ~89 MP limit."""
    from badfiles import bomb_png

    assert 12000 * 9000 < images.MAX_PIXELS
    path = tmp_path / "big.png"
    path.write_bytes(bomb_png(12000, 9000))  # header only: decoding then fails as truncated, not as a bomb
    with pytest.raises(ImageReadError) as info:
        load_rgb(path)
    assert "too large" not in info.value.reason and "truncated" in info.value.reason


def rgb(path: Path) -> np.ndarray:
    img, _ = load_rgb(path)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def test_one_pixel_image(corpus):
    assert rgb(corpus / "odd" / "one_px.png").tolist() == [[[12, 34, 56]]]


def test_16bit_png_is_rescaled_not_clipped(corpus):
    img, mode = load_rgb(corpus / "odd" / "gray16.png")
    arr = np.asarray(img).astype(int)
    assert mode is not None and ("16" in mode or mode == "I")
    # 65535 -> 255, 257*100 -> 100, 32768 -> 128, 21845 -> 85, 257 -> 1 (clipping would give 255 for most).
    assert arr[..., 0].tolist() == [[0, 100, 255], [128, 85, 1]]
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_palette_png(corpus):
    pal = Image.open(corpus / "odd" / "palette.png")
    assert pal.mode == "P"
    expected = np.asarray(pal.convert("RGB")).astype(int)
    img, mode = load_rgb(corpus / "odd" / "palette.png")
    assert mode == "P"
    assert np.array_equal(np.asarray(img).astype(int), expected)


def test_palette_png_with_transparency_goes_on_white(corpus):
    arr = rgb(corpus / "odd" / "palette_trns.png")
    # Index 0 is transparent -> white background; index 1 is opaque green.
    expected_row0 = [[255, 255, 255], [10, 200, 30], [255, 255, 255], [10, 200, 30]]
    assert arr[0].tolist() == expected_row0


def test_rgba_is_composited_on_white(corpus):
    arr = rgb(corpus / "odd" / "rgba.png")
    # Black pixels with alpha 0 / 128 / 255 over white.
    assert arr[0, :, 0].tolist() == [255, 127, 0] or arr[0, :, 0].tolist() == [255, 128, 0]
    assert arr[1, :, 0].tolist()[::-1] == arr[0, :, 0].tolist()


def test_cmyk_jpeg(corpus):
    img, mode = load_rgb(corpus / "odd" / "cmyk.jpg")
    assert mode == "CMYK"
    arr = np.asarray(img).astype(int)
    # CMYK (0, 255, 255, 0) is red.
    assert abs(arr[..., 0].mean() - 255) < 8 and arr[..., 1].mean() < 12 and arr[..., 2].mean() < 12


def test_grayscale(corpus):
    arr = rgb(corpus / "odd" / "gray.png")
    src = np.asarray(Image.open(corpus / "odd" / "gray.png")).astype(int)
    assert np.array_equal(arr[..., 0], src) and np.array_equal(arr[..., 2], src)


@pytest.mark.parametrize("name, top", [("exif_rot6.jpg", RED), ("exif_rot8.jpg", BLUE)])
def test_exif_orientation_is_applied(corpus, name, top):
    """Stored 32x16 (left red, right blue); orientation 6 turns it 90° CW (red on top), 8 CCW (blue on top)."""
    arr = rgb(corpus / "odd" / name)
    assert arr.shape == (32, 16, 3)
    bottom = BLUE if top == RED else RED
    assert np.abs(arr[:12].mean(axis=(0, 1)) - top).max() < 12
    assert np.abs(arr[-12:].mean(axis=(0, 1)) - bottom).max() < 12


# ----------------------------------------------------------------------------- list_images and folders


def test_list_images_nested_non_ascii_hidden_and_symlink_loop(tmp_path):
    expected = make_named_tree(tmp_path)
    loop = make_symlink_loop(tmp_path)
    found = list_images(tmp_path)
    assert set(found) == set(expected) | {loop / "inside.png"}
    assert len(found) == len(set(found))
    assert not any(p.name.startswith(".") for p in found)


def test_list_images_missing_and_not_a_folder(tmp_path):
    with pytest.raises(DsganError, match="no such folder") as info:
        list_images(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value) and info.value.exit_code == 2
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(DsganError, match="not a folder"):
        list_images(tmp_path / "f.png")


def test_require_images_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DsganError, match="holds no images") as info:
        images.require_images(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


@pytest.mark.parametrize("out", [".", "sub", "sub/deeper", "./sub/../"])
def test_check_output_dir_refuses_input_or_inside(tmp_path, out):
    (tmp_path / "sub").mkdir()
    with pytest.raises(DsganError, match="input folder"):
        check_output_dir(tmp_path, tmp_path / out)


def test_check_output_dir_refuses_through_symlink(tmp_path):
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "alias")
    with pytest.raises(DsganError, match="input folder"):
        check_output_dir(tmp_path / "in", tmp_path / "alias" / "out")


def test_check_output_dir_accepts_sibling_with_common_prefix(tmp_path):
    (tmp_path / "in").mkdir()
    check_output_dir(tmp_path / "in", tmp_path / "in_out")  # prefix of the name, not a parent


def test_check_writable_dir_read_only(readonly_dir):
    with pytest.raises(DsganError, match="not writable") as info:
        check_writable_dir(readonly_dir)
    assert str(readonly_dir) in str(info.value)
    with pytest.raises(DsganError, match="cannot create"):
        check_writable_dir(readonly_dir / "child")
    assert list(readonly_dir.iterdir()) == []


def test_check_writable_dir_creates_and_leaves_no_probe(tmp_path):
    check_writable_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_crash_leaves_no_partial_under_final_name(tmp_path):
    dest = tmp_path / "out" / "img.png"

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        with writes.atomic_path(dest) as tmp:
            tmp.write_bytes(b"\x89PNG half")
            raise Crash
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    dest = tmp_path / "img.png"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with writes.atomic_path(dest) as tmp:
            tmp.write_bytes(b"new but half")
            raise RuntimeError
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_atomic_write_killed_process_leaves_only_hidden_partial(tmp_path):
    """A real SIGKILL mid-write: the final name never appears, the leftover is hidden and ignored by list_images."""
    code = (
        "import os, signal, sys\n"
        "from dsgan_cli.plumbing.writes import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'\\x89PNG partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    dest = tmp_path / "x.png"
    res = subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True)
    assert res.returncode == -9
    assert not dest.exists()
    left = list(tmp_path.iterdir())
    assert left and all(p.name.startswith(".x.png.") and p.name.endswith(".partial") for p in left)
    assert list_images(tmp_path) == []


def test_save_image_atomic_roundtrip_and_unknown_suffix(tmp_path):
    img = Image.new("RGB", (3, 2), (1, 2, 3))
    writes.save_image_atomic(img, tmp_path / "ok.png")
    assert np.asarray(Image.open(tmp_path / "ok.png")).tolist() == np.asarray(img).tolist()
    with pytest.raises(DsganError, match="unknown image format"):
        writes.save_image_atomic(img, tmp_path / "bad.xyz")
    assert not (tmp_path / "bad.xyz").exists()


# ----------------------------------------------------------------------------- recipes through the CLI


@pytest.fixture(scope="module")
def bad_recipes(tmp_path_factory) -> dict:
    from conftest import TINY_RECIPE

    return make_bad_recipes(tmp_path_factory.mktemp("recipes"), TINY_RECIPE)


RECIPE_CASES = ["syntax.toml", "unknown_key.toml", "wrong_type.toml", "negative_lr.toml"]


@pytest.mark.slow
def test_bad_recipes_cli_exit_2_one_line(bad_recipes, tmp_path, tiny_recipe):
    """Each broken recipe (and a missing one, and a bad --set) exits 2 with one line naming file and key."""
    before = tree_digest(next(iter(bad_recipes.values()))[0].parent)
    cases = [["train", str(bad_recipes[n][0]), "--no-progress"] for n in RECIPE_CASES]
    cases.append(["train", str(tmp_path / "nope.toml")])
    cases.append(["train", str(tiny_recipe), "--set", "optim.lr=-1"])
    cases.append(["train", str(tiny_recipe), "--set", "train.nonsense=1"])
    results = run_cli_many(cases, cwd=tmp_path)
    for name, res in zip(RECIPE_CASES, results):
        path, must = bad_recipes[name]
        assert res.returncode == 2, (name, res.stderr)
        one_line_error(res.stderr, str(path), must)
    missing, neg_lr, unknown = results[len(RECIPE_CASES) :]
    assert missing.returncode == 2
    one_line_error(missing.stderr, str(tmp_path / "nope.toml"), "not found")
    assert neg_lr.returncode == 2
    one_line_error(neg_lr.stderr, "optim.lr", ">")
    assert unknown.returncode == 2
    one_line_error(unknown.stderr, "nonsense")
    assert tree_digest(next(iter(bad_recipes.values()))[0].parent) == before
    assert list(tmp_path.iterdir()) == []  # no run folder was created


@pytest.mark.slow
def test_bad_recipe_debug_shows_traceback(cli, bad_recipes, tmp_path):
    path, _ = bad_recipes["unknown_key.toml"]
    res = cli("--debug", "train", path, cwd=tmp_path)
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "learning_rat" in res.stderr


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    marker = root / "PWNED"
    return make_bad_checkpoints(root / "files", marker), marker


def test_pickle_payload_is_real(tmp_path):
    """Sanity: the payload really creates its marker when unpickled (so its absence below means something)."""
    marker = tmp_path / "ran"
    pkl = tmp_path / "p.pth"
    pkl.write_bytes(pickle_payload(marker))
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(pkl)], check=True, cwd=REPO / "tests")
    assert marker.exists()


@pytest.mark.parametrize(
    "name, reason",
    [
        ("text.safetensors", "not a valid safetensors"),
        ("truncated.safetensors", "not a valid safetensors"),
        ("wrong_arch.safetensors", "wrong architecture"),
        ("foreign.safetensors", "not a DSGAN generator"),
        ("payload.pth", "not a valid safetensors"),
        ("payload.safetensors", "not a valid safetensors"),
        ("payload_zip.pth", "not a valid safetensors"),
    ],
)
def test_load_generator_refuses_bad_checkpoint(bad_ckpts, name, reason):
    from dsgan_cli.engines.checkpoint import load_generator

    files, marker = bad_ckpts
    before = files[name].read_bytes()
    with pytest.raises(DsganError) as info:
        load_generator(files[name])
    msg = str(info.value)
    assert str(files[name]) in msg and reason in msg and "\n" not in msg
    assert info.value.exit_code == 2
    assert not marker.exists(), "pickle payload was executed"
    assert files[name].read_bytes() == before


def test_load_generator_good_and_missing(bad_ckpts, tmp_path):
    from dsgan_cli.engines.checkpoint import load_generator

    files, _ = bad_ckpts
    g, meta = load_generator(files["good.safetensors"])
    assert meta["scale"] == 2 and meta["step"] == 1 and g.channels == 8
    with pytest.raises(DsganError, match="not found"):
        load_generator(tmp_path / "nope.safetensors")
    with pytest.raises(DsganError, match="without generator.safetensors"):
        load_generator(tmp_path)


# ----------------------------------------------------------------------------- degrade


@pytest.fixture(scope="module")
def degrade_env(tmp_path_factory, bad_ckpts):
    """An input tree with good, odd and bad images plus a tiny generator."""
    root = tmp_path_factory.mktemp("degrade")
    inp = root / "in"
    write_images(inp, 2, 16, seed=3)
    make_bad_images(inp / "bad")
    make_odd_images(inp / "odd")
    make_named_tree(inp)
    make_symlink_loop(inp)
    files, marker = bad_ckpts
    return root, inp, files, marker


def degrade(cli, *args, **kw):
    return cli("degrade", *map(str, args), "--no-progress", **kw)


@pytest.mark.slow
def test_degrade_mixed_tree_reports_failures_and_keeps_inputs(cli, degrade_env, tmp_path):
    root, inp, files, marker = degrade_env
    before = tree_digest(inp)
    out = tmp_path / "out"
    res = degrade(cli, inp, out, "--checkpoint", files["good.safetensors"], "--json")
    assert res.returncode == 1, res.stderr  # some items failed
    assert "Traceback" not in res.stderr
    import json

    summary = json.loads(res.stdout)
    failed = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert set(failed) == set(BAD_IMAGES), failed
    for name, word in BAD_IMAGES.items():
        assert word in failed[name].lower(), (name, failed[name])
    good_inputs = [p for p in list_images(inp) if p.name not in BAD_IMAGES]
    assert summary["written"] == len(good_inputs)
    for p in good_inputs:
        o = out / p.relative_to(inp).with_suffix(".png")
        assert o.is_file(), o
        w, h = Image.open(o).size
        src, _ = load_rgb(p)
        assert (w, h) == (max(1, round(src.width / 2)), max(1, round(src.height / 2)))  # models.downscale rounding
    for rel in ODD_NAMES:
        assert (out / rel).with_suffix(".png").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert tree_digest(inp) == before
    assert not marker.exists()


DEGRADE_BAD_CKPTS = [
    ("text.safetensors", "not a valid safetensors"),
    ("truncated.safetensors", "not a valid safetensors"),
    ("wrong_arch.safetensors", "wrong architecture"),
    ("foreign.safetensors", "not a DSGAN generator"),
    ("payload.pth", "not a valid safetensors"),
    ("payload_zip.pth", "not a valid safetensors"),
]


@pytest.mark.slow
def test_degrade_bad_checkpoints_and_usage_errors_exit_2(degrade_env, tmp_path):
    """Bad checkpoints, missing/empty input, output == input or inside it: exit 2, one line, inputs untouched."""
    root, inp, files, marker = degrade_env
    good = files["good.safetensors"]
    before = tree_digest(inp)
    (tmp_path / "empty").mkdir()
    cases, musts = [], []
    for i, (name, reason) in enumerate(DEGRADE_BAD_CKPTS):
        cases.append(["degrade", inp, tmp_path / f"out{i}", "--checkpoint", files[name], "--no-progress"])
        musts.append((str(files[name]), reason))
    usage = [
        ((tmp_path / "missing", tmp_path / "o1", good), (str(tmp_path / "missing"), "no such folder")),
        ((inp, inp, good), (str(inp), "input folder")),
        ((inp, inp / "odd" / "out", good), ("odd/out", "inside the input folder")),
        ((tmp_path / "empty", tmp_path / "o2", good), (str(tmp_path / "empty"), "no images")),
        ((inp, tmp_path / "o3", tmp_path / "nope.safetensors"), (str(tmp_path / "nope.safetensors"), "not found")),
    ]
    for (src, dst, ck), must in usage:
        cases.append(["degrade", src, dst, "--checkpoint", ck, "--no-progress"])
        musts.append(must)
    for case, res, must in zip(cases, run_cli_many(cases), musts):
        assert res.returncode == 2, (case, res.stderr)
        one_line_error(res.stderr, *must)
    assert not marker.exists(), "pickle payload was executed"
    assert tree_digest(inp) == before
    assert not (inp / "odd" / "out").exists()
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.slow
def test_degrade_read_only_output(degrade_env, readonly_dir):
    root, inp, files, _ = degrade_env
    before = tree_digest(inp)
    good = files["good.safetensors"]
    res, sub = run_cli_many(
        [
            ["degrade", inp, readonly_dir, "--checkpoint", good, "--no-progress"],
            ["degrade", inp, readonly_dir / "sub", "--checkpoint", good, "--no-progress"],
        ]
    )
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(readonly_dir), "not writable")
    assert sub.returncode == 2, sub.stderr
    one_line_error(sub.stderr, str(readonly_dir / "sub"), "cannot create")
    assert tree_digest(inp) == before


@pytest.mark.slow
def test_degrade_debug_traceback(cli, degrade_env, tmp_path):
    root, inp, files, _ = degrade_env
    res = cli("--debug", "degrade", inp, tmp_path / "o", "--checkpoint", files["text.safetensors"], "--no-progress")
    assert res.returncode != 0 and "Traceback" in res.stderr


# ----------------------------------------------------------------------------- eval


@pytest.mark.slow
def test_eval_bad_and_odd_images_are_reported_not_fatal(degrade_env, tmp_path):
    """Bad files in the fake folder: listed with their reason, exit 1, inputs untouched; usage errors exit 2."""
    _, inp, _, _ = degrade_env
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 4, 16, seed=7)
    write_images(real, 4, 16, seed=8, noise=6)
    bad = make_bad_images(fake / "bad")
    (tmp_path / "empty").mkdir()
    before = tree_digest(tmp_path)
    report = tmp_path / "report"
    report.mkdir()
    cases = [
        ["eval", fake, real, "--no-fid", "--json", report / "r.json", "--plot", report / "s.png"],
        ["eval", tmp_path / "missing", real, "--no-fid", "--json", report / "m.json", "--plot", report / "m.png"],
        ["eval", tmp_path / "empty", real, "--no-fid", "--json", report / "e.json", "--plot", report / "e.png"],
        ["eval", fake / "bad", real, "--no-fid", "--json", report / "b.json", "--plot", report / "b.png"],
    ]
    mixed, missing, empty, all_bad = run_cli_many(cases, cwd=report)
    assert mixed.returncode == 1, mixed.stderr
    assert "Traceback" not in mixed.stderr
    data = json.loads((report / "r.json").read_text())
    listed = " ".join(sum(data["unreadable"].values(), []))
    for name in bad:
        assert name in listed, (name, listed)
    assert missing.returncode == 2
    one_line_error(missing.stderr, str(tmp_path / "missing"))
    assert empty.returncode == 2
    one_line_error(empty.stderr, str(tmp_path / "empty"), "no images")
    assert all_bad.returncode == 2, all_bad.stderr
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("report")} == {k: v for k, v in before.items() if not k.startswith("report")}
    # The one error line must name the folder it is about (the per-file warnings above it name each file).
    one_line_error(all_bad.stderr, "no readable image", str(fake / "bad"))


# ----------------------------------------------------------------------------- train data


@pytest.mark.slow
def test_train_bad_data_folders(tmp_path, tiny_recipe):
    """Missing/empty folders and wrong-size images stop with exit 2 naming them; unreadable files are skipped and counted."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    make_bad_images(hr / "bad")
    wrong = tmp_path / "hr_wrong"
    write_images(wrong, 2, 32, seed=6)
    write_images(wrong / "odd", 1, 20, seed=7)
    (tmp_path / "empty").mkdir()
    before = tree_digest(tmp_path)

    def args(h, lr, run):
        return [
            "train",
            tiny_recipe,
            "--no-progress",
            "--set",
            f"data.hr_dir={h}",
            "--set",
            f"data.lr_dir={lr}",
            "--set",
            f"train.output_dir={tmp_path / 'runs' / run}",
            "--set",
            "train.iterations=1",
            "--set",
            "train.batch_size=2",
            "--set",
            "loss.w_perceptual=0",
        ]

    missing, empty, mismatched, skipping = run_cli_many(
        [args(tmp_path / "missing", lr, "a"), args(hr, tmp_path / "empty", "b"), args(wrong, lr, "c"), args(hr, lr, "d")], cwd=tmp_path
    )
    assert missing.returncode == 2, missing.stderr
    one_line_error(missing.stderr, str(tmp_path / "missing"))
    assert empty.returncode == 2, empty.stderr
    one_line_error(empty.stderr, str(tmp_path / "empty"))
    assert mismatched.returncode == 2, mismatched.stderr
    one_line_error(mismatched.stderr, str(wrong / "odd" / "img_000.png"), "20x20")
    assert skipping.returncode == 0, skipping.stderr
    for name in BAD_IMAGES:
        assert name in skipping.stderr, name
    assert "skipped 5 HR" in skipping.stderr
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("runs")} == before


# ----------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def raw_photos(tmp_path_factory):
    """A portrait (shipped by scikit-image) under odd names and formats, plus the bad and odd corpus."""
    skdata = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("prepare_raw") / "raw"
    astro = Image.fromarray(skdata.astronaut()).resize((256, 256), Image.Resampling.LANCZOS)
    (root / "a b" / "ñandú").mkdir(parents=True)
    astro.save(root / "a b" / "ñandú" / "retrato é.png")
    astro.convert("CMYK").save(root / "cmyk face.jpg", quality=95)
    make_bad_images(root / "bad")
    make_odd_images(root / "odd")
    make_symlink_loop(root)
    return root


@pytest.mark.slow
def test_prepare_bad_files_recorded_inputs_untouched(raw_photos, tmp_path):
    before = tree_digest(raw_photos)
    out = tmp_path / "aligned"
    (tmp_path / "empty").mkdir()
    res, missing, same, inside, empty = run_cli_many(
        [
            ["prepare", raw_photos, "--out", out, "--size", "64", "--workers", "1", "--no-progress", "--json"],
            ["prepare", tmp_path / "missing", "--out", tmp_path / "o1", "--no-progress"],
            ["prepare", raw_photos, "--out", raw_photos, "--no-progress"],
            ["prepare", raw_photos, "--out", raw_photos / "bad" / "out", "--no-progress"],
            ["prepare", tmp_path / "empty", "--out", tmp_path / "o2", "--no-progress"],
        ]
    )
    assert res.returncode == 1, res.stderr  # unreadable inputs -> exit 1
    assert "Traceback" not in res.stderr
    records = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    for name, word in BAD_IMAGES.items():
        rec = records[f"bad/{name}"]
        assert rec["status"] == "unreadable" and word in rec["reason"].lower(), rec
    for rel in ["a b/ñandú/retrato é.png", "cmyk face.jpg"]:
        assert records[rel]["status"] in ("ok", "several_faces"), records[rel]
        crop = out / records[rel]["output"]
        assert Image.open(crop).size == (64, 64)
    assert records["odd/one_px.png"]["status"] in ("no_face", "too_small")
    assert not [k for k in records if "self" in k.split("/") or "up" in k.split("/")]  # loop not followed
    for r, must in [
        (missing, str(tmp_path / "missing")),
        (same, "input folder"),
        (inside, "inside the input folder"),
        (empty, str(tmp_path / "empty")),
    ]:
        assert r.returncode == 2, r.stderr
        one_line_error(r.stderr, must)
    assert tree_digest(raw_photos) == before
    assert not (raw_photos / "bad" / "out").exists()


def test_prepare_read_only_output(raw_photos, readonly_dir):
    before = tree_digest(raw_photos)
    (res,) = run_cli_many([["prepare", raw_photos, "--out", readonly_dir, "--workers", "1", "--no-progress"]])
    assert res.returncode == 2, res.stderr
    one_line_error(res.stderr, str(readonly_dir), "not writable")
    assert tree_digest(raw_photos) == before


@pytest.mark.slow
def test_train_output_dir_inside_a_data_folder_is_refused(tmp_path, tiny_recipe):
    """Samples written into data.hr_dir would become "training images" (and break --resume): refuse it up front."""
    hr, lr = tmp_path / "hr", tmp_path / "lr"
    write_images(hr, 4, 32, seed=4)
    write_images(lr, 4, 16, seed=5)
    before = tree_digest(tmp_path)
    cases = [
        [
            "train",
            tiny_recipe,
            "--no-progress",
            "--set",
            f"data.hr_dir={hr}",
            "--set",
            f"data.lr_dir={lr}",
            "--set",
            f"train.output_dir={out}",
            "--set",
            "train.iterations=1",
            "--set",
            "train.batch_size=2",
            "--set",
            "loss.w_perceptual=0",
        ]
        for out in (hr / "run", lr)
    ]
    for res in run_cli_many(cases, cwd=tmp_path):
        assert res.returncode == 2, res.stderr
        one_line_error(res.stderr, "input folder")
    assert tree_digest(tmp_path) == before


def png_48bit(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``arr`` (uint16 H x W x 3), encoded by hand (Pillow cannot write one)."""
    import struct
    import zlib

    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_48bit_png_counts_as_converted(tmp_path):
    """Pillow keeps only the high bytes of a 48-bit PNG and calls it "RGB": it must still count as converted."""
    arr = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1111 + 77).astype(np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(png_48bit(arr))
    img, mode = load_rgb(path)
    assert mode == "RGB;16", "a 48-bit image was taken for plain 8-bit RGB"
    assert np.array_equal(np.asarray(img), (arr >> 8).astype(np.uint8))
    ordinary = tmp_path / "plain.png"
    Image.fromarray((arr >> 8).astype(np.uint8), "RGB").save(ordinary)
    assert load_rgb(ordinary)[1] is None
