"""Fault class: output folders aimed into the inputs, output names that collide, stale outputs and --overwrite."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from badfiles import run_cli_many, tree_digest
from conftest import one_line_error, write_images
from hostile_use import degrade_args, face_photo
from PIL import Image

from dsgan_cli.plumbing import writes
from dsgan_cli.plumbing.errors import DsganError


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
