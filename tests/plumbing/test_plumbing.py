"""Shared plumbing: the JSONL reader, the image header reader, the one 8-bit rounding, the progress bar."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from conftest import synthetic_face_like
from PIL import Image
from rich.console import Console

from dsgan_cli.data.images import ImageReadError, image_size, load_rgb, tensor_to_uint8, to_uint8
from dsgan_cli.engines.trainlog import truncate_metrics
from dsgan_cli.plumbing.errors import DsganError
from dsgan_cli.plumbing.jsonl import read_jsonl
from dsgan_cli.plumbing.progress import progress_bar


def test_read_jsonl_skips_a_torn_last_line_and_non_records(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n\n[1, 2]\n{"step": 2, "loss": NaN}\n{"step": 3, "lo')
    recs = read_jsonl(path)
    assert [r["step"] for r in recs] == [1, 2] and np.isnan(recs[1]["loss"])
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_read_jsonl_names_a_path_it_cannot_read(tmp_path):
    folder = tmp_path / "log.jsonl"
    folder.mkdir()
    with pytest.raises(DsganError, match="log.jsonl: cannot read"):
        read_jsonl(folder)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DsganError, match="not a regular file"):  # and it does not block reading the FIFO
        read_jsonl(fifo)


def test_truncate_metrics_drops_later_steps_and_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss_g": s / 10}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "loss_')
    truncate_metrics(path, 3)
    assert path.read_text() == "\n".join(lines[:3]) + "\n"


def test_image_size_is_the_decoded_size_from_the_header(tmp_path):
    wide = Image.fromarray(synthetic_face_like(40, 4)[:24, :40])  # 40 wide, 24 high
    plain, rotated = tmp_path / "plain.jpg", tmp_path / "rotated.jpg"
    wide.save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    wide.save(rotated, exif=exif, quality=95)
    for path in (plain, rotated):
        assert image_size(path) == load_rgb(path)[0].size
    assert image_size(rotated) == (24, 40)
    assert image_size(tmp_path / "any-name.png", rotated.read_bytes()) == (24, 40)


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"not an image", "not an image file")])
def test_image_size_errors_name_the_file(tmp_path, content, reason):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as e:
        image_size(bad)
    assert e.value.path == bad and str(bad) in str(e.value)
    with pytest.raises(ImageReadError, match="not supported"):
        image_size(tmp_path / "anim.gif")


def test_to_uint8_rounds_to_nearest_and_clamps_for_single_images_and_batches():
    levels = torch.tensor([0.0, 0.49 / 255, 0.51 / 255, 127.5 / 255 - 1e-4, 127.5 / 255 + 1e-4, 1.0, 1.3, -0.2])
    want = [0, 0, 1, 127, 128, 255, 255, 0]
    img = levels.view(1, 1, 8).expand(3, 1, 8)  # (3, H, W)
    single = to_uint8(img)
    assert single.dtype == torch.uint8 and single.shape == (1, 8, 3)
    assert single[0, :, 0].tolist() == want and single[0, :, 2].tolist() == want
    batch = to_uint8(torch.stack([img, img.flip(-1)]))
    assert batch.shape == (2, 1, 8, 3) and torch.equal(batch[0], single) and batch[1, 0, :, 1].tolist() == want[::-1]
    assert np.array_equal(tensor_to_uint8(img), single.numpy())


def _bar_output(enabled: bool, terminal: bool) -> str:
    """What one progress bar run writes to a console that is (or is not) a terminal."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=120)
    with progress_bar(enabled, console=console, fields=("losses",)) as bar:
        task = bar.add_task("degrading", total=4, losses="g 0.5")
        for _ in range(4):
            bar.advance(task)
    return buf.getvalue()


def test_progress_bar_draws_only_for_a_terminal_and_when_asked():
    shown = _bar_output(True, True)
    assert "degrading" in shown and "4/4" in shown and "img/s" in shown and "g 0.5" in shown
    assert _bar_output(False, True) == ""
    assert _bar_output(False, False) == ""
    # Not a terminal (a pipe, a log): plain lines, never a bar frame, never silence.
    lines = _bar_output(True, False).splitlines()
    assert lines[0].startswith("degrading: 1/4 (25%), ") and " img/s" in lines[0] and "ETA" in lines[0], lines
    assert lines[-1].startswith("degrading: 4/4 (100%), ") and lines[-1].endswith("g 0.5"), lines
    assert not any("\x1b[" in ln or "━" in ln for ln in lines), lines


def test_image_size_refuses_a_decompression_bomb_header(tmp_path):
    from badfiles import bomb_png

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    with pytest.raises(ImageReadError, match="too large"):
        image_size(bomb)
