"""Frequency report pieces: power spectrum, spectral distance, noise estimate, plots; `eval --no-fid` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_face_like, write_images
from PIL import Image

from dsgan_cli.commands.eval_report import Reporter, default_plot_path
from dsgan_cli.commands.evaluate import EvalOptions, evaluate
from dsgan_cli.metrics import spectrum
from dsgan_cli.plumbing import plots


def smooth_image(size: int = 64) -> np.ndarray:
    """A smooth float image in [0, 1] (gradient + slow waves): almost no high-frequency content."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return 0.5 + 0.2 * (xx - 0.5) + 0.1 * np.sin(2 * np.pi * xx) * np.cos(2 * np.pi * yy)


def test_spectrum_shape_and_white_noise_level():
    rng = np.random.default_rng(0)
    spec = spectrum.radial_power_spectrum(rng.normal(0.5, 0.1, (64, 48)))
    assert spec.shape == (24,)
    freqs = spectrum.radial_frequencies(24)
    assert freqs[0] > 0 and freqs[-1] < 0.5
    # Normalised so white noise of variance s^2 has a flat spectrum at s^2.
    specs = np.mean([spectrum.radial_power_spectrum(rng.normal(0, 0.1, (64, 64))) for _ in range(8)], axis=0)
    assert np.mean(specs[4:]) == pytest.approx(0.01, rel=0.1)


def test_noisy_images_have_more_high_frequency_power(tmp_path):
    clean = write_images(tmp_path / "clean", 4, 32, seed=3)
    noisy = write_images(tmp_path / "noisy", 4, 32, seed=3, noise=25)
    s_clean, s_noisy = (spectrum.set_stats(np.asarray(Image.open(p).convert("RGB")) for p in paths)["spectrum"] for paths in (clean, noisy))
    high = spectrum.radial_frequencies(len(s_clean)) >= spectrum.HIGH_BAND
    assert s_noisy[high].mean() > 2 * s_clean[high].mean()
    # Independent RGB noise of sigma 25 gives luminance noise power (25/255)^2 * sum(LUMA^2), flat over frequency.
    expected = (25 / 255) ** 2 * float(np.sum(spectrum.LUMA**2))
    assert (s_noisy - s_clean)[high].mean() == pytest.approx(expected, rel=0.3)
    # The low band is dominated by image content and barely changes.
    assert s_noisy[1] == pytest.approx(s_clean[1], rel=0.5)


@pytest.mark.parametrize("sigma", [3.0, 10.0])
def test_noise_estimate_matches_true_sigma(sigma):
    rng = np.random.default_rng(1)
    base = smooth_image(128) * 255
    noisy = base + rng.normal(0, sigma, base.shape)
    assert spectrum.estimate_noise(noisy / 255.0) == pytest.approx(sigma, rel=0.1)
    assert spectrum.estimate_noise(base / 255.0) < 0.3
    as_uint8 = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    rgb = np.repeat(as_uint8[..., None], 3, axis=2)
    assert spectrum.estimate_noise(rgb) == pytest.approx(sigma, rel=0.1)


def test_spectral_distance_definition():
    a = np.full(16, 1e-3)
    assert spectrum.spectral_distance(a, a) == 0.0
    assert spectrum.spectral_distance(a, a * 10) == pytest.approx(1.0)
    b = a.copy()
    b[8:] *= 100  # only the upper half (f >= 0.25) differs
    assert spectrum.spectral_distance(a, b) == pytest.approx(1.0)
    assert spectrum.spectral_distance(a, b, high_band=0.25) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="different lengths"):
        spectrum.spectral_distance(a, a[:8])


def test_set_stats_counts_averages_and_refuses_an_empty_set():
    rng = np.random.default_rng(2)
    quiet = np.full((32, 32, 3), 128, np.uint8)
    loud = np.clip(128 + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    s = spectrum.set_stats([quiet, loud])
    assert s["count"] == 2 and s["spectrum"].shape == (16,)
    # A flat image has no power and no noise: the set's mean is half the noisy image's alone.
    assert s["noise"] == pytest.approx(spectrum.estimate_noise(loud) / 2) and s["noise_std"] == pytest.approx(s["noise"])
    assert np.allclose(s["spectrum"], spectrum.radial_power_spectrum(spectrum.to_gray(loud)) / 2)
    with pytest.raises(ValueError, match="empty"):
        spectrum.set_stats([])


def test_frequency_report_through_evaluate(tmp_path):
    write_images(tmp_path / "real", 3, 32, seed=5, noise=8)
    write_images(tmp_path / "fake", 3, 32, seed=6)
    report = evaluate(tmp_path / "fake", tmp_path / "real", EvalOptions(fid=False, cache_dir=tmp_path / "c", progress=False))["frequency"]
    assert report["reference"] == "real" and report["image_size"] == [32, 32]
    assert len(report["frequencies"]) == 16
    r, f = report["sets"]["real"], report["sets"]["fake"]
    assert r["spectral_distance"] == 0.0 and f["spectral_distance"] > 0.05
    assert r["noise"] > f["noise"] + 4
    assert r["count"] == 3 and len(f["spectrum"]) == 16


def test_line_plot_writes_marked_png_atomically(tmp_path):
    out = tmp_path / "sub" / "plot.png"
    xs = [0, 1, 2, 3]
    plots.line_plot(
        {"a": (xs, [1, 10, 100, 1000]), "b": (xs, [0, 2, float("nan"), 3])},
        out,
        title="t",
        xlabel="x",
        ylabel="y",
        logy=True,
        size=(400, 300),
    )
    with Image.open(out) as im:
        assert im.size == (400, 300) and im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
    assert plots.is_own_plot(out)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]
    # Both series colours are on the canvas.
    for colour in plots.PALETTE[:2]:
        assert (np.abs(arr.astype(int) - colour).sum(axis=2) < 10).sum() > 20


def test_default_plot_path_is_beside_the_report_never_the_current_folder_or_a_user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_plot_path(None, [tmp_path / "fake"]) is None, "no report file: no plot, not one in the current folder"
    assert default_plot_path("-", [tmp_path / "fake"]) is None
    plots.line_plot({"a": ([0, 1], [1, 2])}, tmp_path / "r_spectrum.png")
    assert default_plot_path(tmp_path / "r.json", [tmp_path / "fake"]) == tmp_path / "r_spectrum.png"  # our earlier plot
    Image.new("RGB", (4, 4)).save(tmp_path / "u_spectrum.png")
    rep = Reporter(None)
    assert default_plot_path(tmp_path / "u.json", [tmp_path / "fake"], rep) == tmp_path / "u_spectrum-1.png" and rep.messages
    # Beside a JSON that lies inside an input folder would pollute it: no plot, and a warning says so.
    rep = Reporter(None)
    assert default_plot_path(tmp_path / "fake" / "r.json", [tmp_path / "fake"], rep) is None and rep.messages


def test_evaluate_no_fid_mixed_sizes_modes_and_reference(tmp_path):
    fake, real, hr = tmp_path / "fake", tmp_path / "real", tmp_path / "hr"
    write_images(fake, 3, 32, seed=1, noise=10)
    write_images(real, 3, 32, seed=2, noise=10)
    write_images(hr, 2, 64, seed=3)
    Image.fromarray(synthetic_face_like(40, 9)).convert("L").save(fake / "gray_40.png")
    Image.fromarray(synthetic_face_like(32, 8)).convert("RGBA").save(fake / "alpha.png")
    result = evaluate(
        fake,
        real,
        EvalOptions(
            reference_dir=hr,
            fid=False,
            cache_dir=tmp_path / "cache",
            plot_path=tmp_path / "p.png",
            json_path=tmp_path / "r.json",
            progress=False,
        ),
    )
    assert result["fid"] is None and result["kid_mean"] is None
    assert result["counts"] == {"fake": 5, "real": 3, "reference": 2}
    assert result["resized"] is True and result["resized_counts"]["fake"] == 1 and result["image_size"] == [32, 32]
    assert result["converted_counts"]["fake"] == 2
    assert any("resized" in w for w in result["warnings"])
    sets = result["frequency"]["sets"]
    # Bicubic Xb is clean, the real set is noisy.
    assert sets["reference"]["noise"] < sets["real"]["noise"] - 5
    assert sets["reference"]["spectral_distance"] > sets["fake"]["spectral_distance"]
    assert json.loads((tmp_path / "r.json").read_text())["frequency"]["sets"]["fake"]["count"] == 5
    assert Path(result["plot"]).is_file()


@pytest.mark.slow
def test_cli_no_fid_end_to_end(tmp_path, cli):
    fake, real = tmp_path / "fake", tmp_path / "real"
    write_images(fake, 3, 32, seed=1, noise=12)
    write_images(real, 3, 32, seed=2)
    (real / "broken.png").write_bytes(b"not a png")
    proc = cli("eval", fake, real, "--no-fid", "--json", "-", "--cache-dir", tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # one unreadable image: reported, run completes
    data = json.loads(proc.stdout)
    assert data["fid"] is None and data["counts"] == {"fake": 3, "real": 3, "reference": None}
    assert "broken.png" in proc.stderr and "broken.png" in data["unreadable"]["real"][0]
    assert data["plot"] is None and not list(tmp_path.glob("*.png")), "a plot was dropped into the current folder"
    assert "no spectrum plot: name one with --plot PATH" in proc.stderr
    assert data["frequency"]["sets"]["fake"]["noise"] > data["frequency"]["sets"]["real"]["noise"] + 5


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "empty"])
def test_cli_bad_folders_one_line_exit_2(tmp_path, cli, case):
    real = tmp_path / "real"
    write_images(real, 2, 16)
    fake = tmp_path / "fake"
    if case == "empty":
        fake.mkdir()
    proc = cli("eval", fake, real, "--no-fid", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(fake) in lines[0]
    assert ("no such folder" if case == "missing" else "holds no images") in lines[0]
    assert not (tmp_path / "dsgan_eval_spectrum.png").exists()
