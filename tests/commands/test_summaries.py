"""The ``--json`` summaries of ``prepare``, ``degrade`` and ``pairs`` share their keys (``written``, ``skipped``, ``failed``, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, small_generator_file, write_images
from PIL import Image

skdata = pytest.importorskip("skimage.data")

#: Keys every folder command's summary has, and their JSON types.
COMMON = {"output_dir": str, "written": int, "skipped": int, "failed": list, "seconds": float}
#: Each command's own keys on top of them.
OWN = {
    "degrade": {"converted_modes", "images_per_second", "scale", "device", "processes"},
    "pairs": {"converted_modes", "images_per_second", "scale", "device", "processes", "pairs", "cleanup_factor"},
    "prepare": {"manifest", "counts", "not_images"},
}


def check_common(summary: dict, command: str, output_dir: Path, written: int, skipped: int, failed: list[Path]) -> None:
    """The shared keys are there with their types and the expected values; nothing else but the command's own keys."""
    assert set(summary) == set(COMMON) | OWN[command], (command, sorted(summary))
    for key, kind in COMMON.items():
        assert type(summary[key]) is kind, (command, key, summary[key])
    assert summary["output_dir"] == str(output_dir), command
    assert summary["seconds"] >= 0, command
    assert (summary["written"], summary["skipped"]) == (written, skipped), (command, summary)
    for item in summary["failed"]:
        assert set(item) == {"path", "reason"} and isinstance(item["path"], str), (command, item)
        assert isinstance(item["reason"], str) and item["reason"], (command, item)
    assert [f["path"] for f in summary["failed"]] == [str(p) for p in failed], (command, summary["failed"])


def run_json(*args) -> tuple[int, dict, str]:
    res = run_cli(*args, "--json", "--no-progress")
    assert res.stdout, res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


@pytest.mark.slow
def test_prepare_degrade_and_pairs_report_the_same_keys_on_a_first_and_a_second_run(tmp_path):
    ckpt = small_generator_file(tmp_path / "ckpt" / "generator.safetensors", seed=1)
    hr = tmp_path / "hr"
    write_images(hr, 3, 16)
    broken = hr / "broken.png"
    broken.write_text("not an image")
    photos = tmp_path / "photos"
    photos.mkdir()
    astro = Image.fromarray(skdata.astronaut())
    astro.save(photos / "astronaut.jpg", quality=95)
    astro.resize((307, 307), Image.Resampling.LANCZOS).save(photos / "small.png")
    notes = photos / "notes.png"
    notes.write_text("not an image")

    runs = {
        "degrade": (["degrade", hr, tmp_path / "lr", "-c", ckpt], tmp_path / "lr", 3, [broken]),
        "pairs": (["pairs", hr, tmp_path / "pairs", "-c", ckpt], tmp_path / "pairs", 3, [broken]),
        "prepare": (["prepare", photos, "--out", tmp_path / "aligned", "--size", "64", "--workers", "1"], tmp_path / "aligned", 2, [notes]),
    }
    for command, (args, out, n, failed) in runs.items():
        code, first, err = run_json(*args)
        assert code == 1, (command, err)  # the unreadable input: listed, exit 1
        check_common(first, command, out, written=n, skipped=0, failed=failed)
        code, second, err = run_json(*args)
        assert code == 1, (command, err)
        # prepare reuses every record, the unreadable file's too (and still lists it as failed).
        check_common(second, command, out, written=0, skipped=n + (command == "prepare"), failed=failed)
        assert str(failed[0]) in err, (command, err)
    assert first["counts"]["ok"] == 2 and first["counts"]["unreadable"] == 1


def test_summaries_of_several_processes_add_up():
    """What ``accelerate launch`` ranks gather (pickled summaries) merges into one with the shared keys summed."""
    import pickle

    from dsgan_cli.engines.inference import FolderSummary, merge_summaries

    parts = [
        FolderSummary(written=3, skipped=1, failed=[("b.png", "truncated")], converted_modes={"L": 1}, seconds=2.0),
        FolderSummary(written=1, skipped=2, failed=[("a.png", "empty")], converted_modes={"L": 1, "P": 2}, seconds=4.0),
    ]
    total = merge_summaries([pickle.loads(pickle.dumps(p)) for p in parts])
    assert (total.written, total.skipped, total.seconds) == (4, 3, 4.0)
    assert total.failed == [("a.png", "empty"), ("b.png", "truncated")]
    assert total.converted_modes == {"L": 2, "P": 2} and total.images_per_second == 1.0
    d = total.to_dict()
    assert d["failed"] == [{"path": "a.png", "reason": "empty"}, {"path": "b.png", "reason": "truncated"}]
    assert {"written", "skipped", "failed", "seconds", "output_dir"} <= set(d) and "converted" not in d
