"""prepare: face detection + alignment on real photographs shipped by scikit-image."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from dsgan_cli.commands.prepare import MANIFEST, FaceCrop, prepare_folder
from dsgan_cli.data.align import apply_transform, similarity_transform, template_points
from dsgan_cli.data.faces import FaceDetector

skdata = pytest.importorskip("skimage.data")
SIZE = 128


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("hog")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A raw folder: the astronaut portrait as shot, rotated, shrunk and enlarged; a cat; bad files."""
    root = tmp_path_factory.mktemp("raw")
    astro = Image.fromarray(skdata.astronaut())
    astro.save(root / "astronaut.jpg", quality=95)
    (root / "variants").mkdir()
    astro.rotate(18, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)).save(root / "variants" / "rotated.png")
    astro.resize((307, 307), Image.Resampling.LANCZOS).save(root / "variants" / "small.png")
    astro.resize((1024, 1024), Image.Resampling.LANCZOS).save(root / "variants" / "large.png")
    Image.fromarray(skdata.chelsea()).save(root / "cat.png")
    (root / "notes.png").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    data = (root / "astronaut.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned") / "out"
    summary = prepare_folder(raw, out, FaceCrop(size=SIZE), workers=1, progress=False)
    records = {r["input"]: r for r in map(json.loads, (out / MANIFEST).read_text().splitlines())}
    return out, summary, records


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    a = np.deg2rad(23)
    m = np.array([[1.7 * np.cos(a), -1.7 * np.sin(a), 12.0], [1.7 * np.sin(a), 1.7 * np.cos(a), -4.0]])
    est = similarity_transform(src, apply_transform(m, src))
    assert np.allclose(est, m, atol=1e-9)


@pytest.mark.parametrize("name", ["astronaut.jpg", "variants/rotated.png", "variants/small.png", "variants/large.png"])
def test_aligned_landmarks_land_on_the_template(prepared, detector, name):
    out, _, records = prepared
    rec = records[name]
    assert rec["status"] == "ok", rec
    aligned = Image.open(out / rec["output"])
    assert aligned.size == (SIZE, SIZE)
    faces = detector.detect(aligned.convert("RGB"))
    assert faces, f"no face found again in the aligned crop of {name}"
    err = np.linalg.norm(faces[0].landmarks - template_points(SIZE), axis=1)
    # Eye corners within a few pixels of the template at 128 px.
    assert err[:4].max() < 4.0, err


def test_statuses_and_manifest_fields(prepared):
    out, summary, records = prepared
    assert records["cat.png"]["status"] == "no_face"
    for bad in ("notes.png", "empty.jpg", "truncated.jpg"):
        assert records[bad]["status"] == "unreadable" and records[bad]["reason"], records[bad]
    assert summary.counts["ok"] == 4 and summary.counts["unreadable"] == 3
    rec = records["astronaut.jpg"]
    for key in ("input", "status", "reason", "output", "score", "box", "landmarks", "other_faces", "source", "settings"):
        assert key in rec
    assert len(rec["landmarks"]) == 5 and rec["score"] > 0
    assert sorted(records) == list(map(lambda r: json.loads(r)["input"], (out / MANIFEST).read_text().splitlines()))
    assert (out / "variants" / "rotated.png").is_file()


def test_too_small_faces_are_skipped(raw, tmp_path):
    summary = prepare_folder(raw / "variants", tmp_path / "o", FaceCrop(size=SIZE, min_face=150), workers=1, progress=False)
    records = {r["input"]: r for r in map(json.loads, summary.manifest.read_text().splitlines())}
    assert records["small.png"]["status"] == "too_small"
    assert records["large.png"]["status"] == "ok"
    assert not (tmp_path / "o" / "small.png").exists()


@pytest.mark.slow
def test_rerun_reuses_records_and_keeps_outputs(raw, tmp_path):
    out = tmp_path / "o"
    prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    first = (out / MANIFEST).read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    assert again.skipped == 3 and again.written == 0
    assert (out / MANIFEST).read_bytes() == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes


def test_several_faces_keeps_the_largest_and_records_the_other(tmp_path):
    astro = Image.fromarray(skdata.astronaut())
    group = Image.new("RGB", (952, 512), (128, 128, 128))
    group.paste(astro, (0, 0))
    group.paste(astro.resize((440, 440), Image.Resampling.LANCZOS), (512, 72))
    (tmp_path / "in").mkdir()
    group.save(tmp_path / "in" / "group.png")
    summary = prepare_folder(tmp_path / "in", tmp_path / "o", FaceCrop(size=SIZE), workers=1, progress=False)
    rec = json.loads(summary.manifest.read_text())
    assert rec["status"] == "several_faces" and len(rec["other_faces"]) == 1, rec
    assert rec["box"][0] < 512 <= rec["other_faces"][0]["box"][0]  # the larger, left face is kept
    assert (tmp_path / "o" / "group.png").is_file()


@pytest.mark.slow
def test_overwrite_recomputes_outputs(raw, tmp_path):
    out = tmp_path / "o"
    prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    (out / "small.png").write_bytes(b"stale")
    kept = prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    assert kept.written == 0 and (out / "small.png").read_bytes() == b"stale"
    again = prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False, overwrite=True)
    assert again.written == 3 and again.skipped == 0
    assert Image.open(out / "small.png").size == (SIZE, SIZE)


@pytest.mark.slow
def test_cli_run_exit_codes_and_output_location(raw, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for f in (raw / "variants").iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    (src / "notes.txt").write_text("shot on 2026-05-01\n")  # not an image: left alone, as degrade does
    res = run_cli("prepare", src, "--size", "64", "--workers", "2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["counts"]["ok"] == 3 and summary["failed"] == [] and summary["not_images"] == ["notes.txt"]
    assert "note: skipped 1 file(s) without an image suffix (notes.txt)" in res.stderr
    # Piped, progress shows as plain lines from the first photo on.
    assert any(ln.startswith("prepare: 1/3 (33%), ") for ln in res.stderr.splitlines()), res.stderr
    assert summary["output_dir"] == str((tmp_path / "photos_aligned_64").resolve())
    assert len(list((tmp_path / "photos_aligned_64").glob("*.png"))) == 3
    res = run_cli("prepare", raw, "--out", tmp_path / "o", "--size", "64", "--workers", "1")
    assert res.returncode == 1
    assert "notes.png" in res.stderr and "unreadable" in res.stderr
    res = run_cli("prepare", raw, "--out", raw / "inside")
    assert res.returncode == 2 and "inside the input" in res.stderr
    assert not (raw / "inside").exists()


@pytest.mark.slow
def test_one_photo_that_fails_in_any_way_does_not_stop_the_others(raw, tmp_path, monkeypatch):
    """Whatever one photo raises while being aligned or written, the others are written and it is listed."""
    import dsgan_cli.data.align as align

    real = align.align_face

    def fails_for_the_large_one(img, landmarks, size, margin):
        if img.size[0] >= 1000:
            raise RuntimeError("injected failure")
        return real(img, landmarks, size, margin)

    monkeypatch.setattr(align, "align_face", fails_for_the_large_one)
    out = tmp_path / "o"
    summary = prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    records = {r["input"]: r for r in map(json.loads, summary.manifest.read_text().splitlines())}
    assert records["large.png"]["status"] == "failed" and "injected failure" in records["large.png"]["reason"]
    assert records["rotated.png"]["status"] == "ok" and (out / "rotated.png").is_file()
    assert "injected failure" in " ".join(r for _, r in summary.failed)
    monkeypatch.setattr(align, "align_face", real)
    again = prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    records = {r["input"]: r for r in map(json.loads, again.manifest.read_text().splitlines())}
    assert records["large.png"]["status"] == "ok", "a failed photo must be tried again on the next run"


@pytest.mark.slow
def test_a_photo_rewritten_in_place_is_redone_and_a_chmod_is_not(raw, tmp_path):
    """Size and mtime kept (cp -p, rsync --inplace): the ctime and then the content digest tell; a changed ctime
    alone (chmod) costs a digest, not a new face detection."""
    import os
    import shutil

    src = tmp_path / "in"
    shutil.copytree(raw / "variants", src)
    out = tmp_path / "o"
    prepare_folder(src, out, FaceCrop(size=SIZE), workers=1, progress=False)
    os.chmod(src / "large.png", 0o600)
    again = prepare_folder(src, out, FaceCrop(size=SIZE), workers=1, progress=False)
    assert again.skipped == 3 and again.written == 0, "a chmod made a photo be processed again"
    target = src / "small.png"
    st = target.stat()
    other = (src / "rotated.png").read_bytes()
    data = (other + b"\0" * st.st_size)[: st.st_size] if len(other) < st.st_size else other[: st.st_size]
    with open(target, "r+b") as f:  # in place, same size (the image may not decode: it must be looked at again)
        f.write(data)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    while target.stat().st_ctime_ns == st.st_ctime_ns:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = prepare_folder(src, out, FaceCrop(size=SIZE), workers=1, progress=False)
    assert third.skipped == 2, "the photo rewritten in place was taken for the old one"


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_an_unreadable_settings_record_is_refused_like_degrades_not_taken_for_empty(raw, tmp_path, content):
    """prepare, degrade and pairs read their folder's record the same way (output_record.read_output_record)."""
    from dsgan_cli.commands.prepare import SETTINGS_RECORD
    from dsgan_cli.plumbing.errors import DsganError
    from dsgan_cli.plumbing.output_record import read_output_record

    out = tmp_path / "o"
    out.mkdir()
    (out / SETTINGS_RECORD).write_bytes(content)
    assert read_output_record(out / SETTINGS_RECORD) == {"unreadable": True}
    with pytest.raises(DsganError, match="other settings.*--overwrite"):
        prepare_folder(raw / "variants", out, FaceCrop(size=SIZE), workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [SETTINGS_RECORD], "nothing may be written before the refusal"
