"""`eval`: FID/KID through torch-fidelity's Inception-v3 (random-init weights file), caching, weights handling, CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_face_like, write_images
from PIL import Image

from dsgan_cli.commands.evaluate import EvalOptions, evaluate
from dsgan_cli.metrics import fid
from dsgan_cli.plumbing.errors import DsganError

#: Keys of the report, as documented in docs/file-formats.md.
TOP_KEYS = {
    "fid",
    "kid_mean",
    "kid_std",
    "kid_subset_size",
    "counts",
    "unreadable",
    "image_size",
    "resized",
    "resized_counts",
    "converted_counts",
    "real_stats_cached",
    "warnings",
    "settings",
    "frequency",
    "plot",
}
SET_KEYS = {"count", "noise", "noise_std", "spectral_distance", "spectral_distance_high", "spectrum"}
N = 3  # images per set: Inception runs at 299x299 internally, so keep the count small


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """An Inception-v3 weights file in torch-fidelity's layout with random (He-initialised) weights."""
    path = tmp_path_factory.mktemp("weights") / "inception-random.pth"
    torch.save(fid.random_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A: clean images; noisy: the same images with Gaussian noise; cache: shared by the tests (saves Inception runs)."""
    root = tmp_path_factory.mktemp("sets")
    write_images(root / "A", N, 32, seed=1)
    write_images(root / "noisy", N, 32, seed=1, noise=25)
    return {"A": root / "A", "noisy": root / "noisy", "root": root, "cache": root / "cache", "data": root / "data"}


def test_trace_term_matches_torch_fidelity():
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    rng = np.random.default_rng(0)
    for n1, n2 in ((200, 150), (20, 30)):  # n > dim (eigh path) and n < dim (low-rank path)
        f1 = torch.from_numpy(rng.normal(size=(n1, 64)).astype(np.float32))
        f2 = torch.from_numpy((rng.normal(size=(n2, 64)) * 1.3 + 0.2).astype(np.float32))
        s1, s2 = fid.fid_statistics(f1), fid.fid_statistics(f2)
        ref = fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID]
        assert fid.frechet_distance(s1, s2, f1.numpy(), f2.numpy()) == pytest.approx(ref, rel=1e-6)
        assert fid.frechet_distance(s1, s2) == pytest.approx(ref, rel=1e-6)
        assert fid.frechet_distance(s1, s1, f1.numpy(), f1.numpy()) < 1e-9
    # A singular covariance (a constant feature) has no Cholesky factor: the square-root path must agree too.
    f1[:, 0] = 1.0
    s1 = fid.fid_statistics(f1)
    assert fid.frechet_distance(s1, s2) == pytest.approx(fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID], rel=1e-6)


@pytest.mark.slow
def test_fid_identical_noisy_and_cache_hit(weights_file, folders, tmp_path):
    a, noisy = folders["A"], folders["noisy"]
    kw = dict(inception_weights=weights_file, cache_dir=folders["cache"], data_cache_dir=folders["data"], batch_size=2, progress=False)

    same = evaluate(a, a, EvalOptions(json_path=tmp_path / "same.json", plot_path=tmp_path / "same.png", **kw))
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert same["real_stats_cached"] is False
    assert any(f"fake: {N}, real: {N}" in w for w in same["warnings"])  # small-set warning names the counts

    data = json.loads((tmp_path / "same.json").read_text())
    assert TOP_KEYS <= set(data)
    assert data["kid_subset_size"] == N and data["counts"] == {"fake": N, "real": N, "reference": None}
    assert data["settings"]["feature_extractor"] == "inception-v3-compat"
    assert data["settings"]["inception_weights"] == str(weights_file)
    assert set(data["frequency"]["sets"]) == {"fake", "real"}
    assert SET_KEYS <= set(data["frequency"]["sets"]["fake"])
    assert len(data["frequency"]["frequencies"]) == len(data["frequency"]["sets"]["real"]["spectrum"]) == 16
    width, height = Image.open(tmp_path / "same.png").size
    assert width == 800 and height > 800, "the radial spectra over each set's 2-D spectrum and autocorrelation map"
    assert set(data["structure"]["sets"]) == {"fake", "real"} and data["structure"]["sets"]["fake"]["distance"] is not None

    far = evaluate(noisy, a, EvalOptions(**kw))
    assert far["real_stats_cached"] is True  # real folder unchanged: stats served from the cache
    assert far["fid"] > 0.1 and far["fid"] > 1000 * max(same["fid"], 1e-9)
    assert far["kid_mean"] > same["kid_mean"]
    assert far["frequency"]["sets"]["fake"]["noise"] > far["frequency"]["sets"]["real"]["noise"] + 5
    assert far["frequency"]["sets"]["real"] == same["frequency"]["sets"]["real"]
    assert {p.name.split("-")[0] for p in folders["cache"].iterdir()} == {"frequency", "structure", "inception"}


@pytest.mark.slow
def test_cache_invalidated_when_a_real_file_changes(weights_file, folders, tmp_path):
    from dsgan_cli.data.datacache import scan_set

    kw = dict(inception_weights=weights_file, cache_dir=folders["cache"], data_cache_dir=folders["data"], batch_size=2, progress=False)
    real = tmp_path / "real"
    shutil.copytree(folders["A"], real)  # the same files in another folder: the same content key as A
    key = lambda folder: scan_set(folder, (32, 32), what="real", resize=True, workers=1, variant="eval")[1]  # noqa: E731
    assert key(real) == key(folders["A"])
    evaluate(folders["noisy"], folders["A"], EvalOptions(**kw))  # A's statistics are in the cache now (if not already)
    assert evaluate(folders["noisy"], real, EvalOptions(**kw))["real_stats_cached"] is True  # keyed by content, not by folder
    entries = set(folders["cache"].iterdir())

    # Rewrite one real image (new content and mtime): the cached stats must not be served.
    victim = sorted(real.iterdir())[0]
    Image.fromarray(synthetic_face_like(32, 999)).save(victim)
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    assert key(real) != key(folders["A"])
    after = evaluate(folders["noisy"], real, EvalOptions(**kw))
    assert after["real_stats_cached"] is False
    assert after["fid"] > 0.1
    assert len(set(folders["cache"].iterdir()) - entries) == 3  # new frequency, structure and inception entries for the new content


def test_weights_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(DsganError, match="bad.pth: cannot read Inception weights"):
        fid.build_extractor(fid.resolve_weights(bad))
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(DsganError, match="wrong.safetensors: not torch-fidelity's Inception-v3 weights"):
        fid.build_extractor(fid.resolve_weights(wrong))

    class Payload:  # a pickle that would run code: refused by weights_only loading
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil)
    with pytest.raises(DsganError, match="evil.pth: cannot read Inception weights"):
        fid.load_state_dict_safely(evil)
    with pytest.raises(DsganError, match="not found"):
        fid.resolve_weights(tmp_path / "missing.pth")


@pytest.mark.slow
def test_cli_missing_weights_says_how_to_provide_them(tmp_path, cli, folders):
    env = {"TORCH_HOME": str(tmp_path / "torch-home"), "DSGAN_INCEPTION_WEIGHTS": ""}
    proc = cli("eval", folders["noisy"], folders["A"], "--cache-dir", tmp_path / "c", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Inception-v3 weights")
    assert fid.INCEPTION_URL in lines[0] and "--inception-weights" in lines[0] and "DSGAN_INCEPTION_WEIGHTS" in lines[0]
    assert not (tmp_path / "torch-home").exists() or not any((tmp_path / "torch-home").rglob("*.pth"))


@pytest.mark.slow
def test_cli_fid_with_env_weights_reference_and_json_stdout(tmp_path, cli, weights_file, folders):
    hr = tmp_path / "hr"
    write_images(hr, 2, 64, seed=4)
    env = {"DSGAN_INCEPTION_WEIGHTS": str(weights_file)}
    plot = tmp_path / "plot.png"
    plot.write_bytes(b"old")  # a plot path the user names is (re)written
    proc = cli(
        "eval",
        folders["noisy"],
        folders["A"],
        "--reference",
        hr,
        "--json",
        "-",
        "--plot",
        plot,
        "--batch-size",
        "3",
        "--cache-dir",
        folders["cache"],
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout holds only the JSON; tables and warnings went to stderr
    assert TOP_KEYS <= set(data) and data["fid"] > 0.1
    assert data["counts"] == {"fake": N, "real": N, "reference": 2}
    assert data["settings"]["batch_size"] == 3 and data["settings"]["inception_weights"] == str(weights_file)
    assert data["frequency"]["sets"]["reference"]["noise"] < data["frequency"]["sets"]["fake"]["noise"]
    assert "FID" in proc.stderr and "biased" in proc.stderr
    assert data["plot"] == str(plot) and Image.open(plot).format == "PNG"
    # Piped, progress goes to stderr as plain lines (stdout stays the JSON alone).
    assert any(ln.startswith("decode") and "img/s" in ln for ln in proc.stderr.splitlines()), proc.stderr


def test_random_inception_only_when_asked(tmp_path, folders, monkeypatch):
    monkeypatch.delenv("DSGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(DsganError, match="DSGAN_OFFLINE=1"):
        fid.resolve_weights(None, allow_random=False)
    w = fid.resolve_weights(None, allow_random=True)
    assert w.kind == "random" and "RANDOM" not in w.describe() and "random" in w.describe()


@pytest.mark.slow
def test_fid_and_kid_equal_torch_fidelity_calculate_metrics(weights_file, folders):
    """Our FID/KID on two folders equal torch-fidelity's own end-to-end computation with the same weights file."""
    from torch_fidelity import calculate_metrics

    ours = evaluate(
        folders["noisy"],
        folders["A"],
        EvalOptions(
            inception_weights=weights_file, cache_dir=folders["cache"], data_cache_dir=folders["data"], batch_size=2, progress=False
        ),
    )
    theirs = calculate_metrics(
        input1=str(folders["noisy"]),
        input2=str(folders["A"]),
        fid=True,
        kid=True,
        kid_subset_size=N,
        feature_extractor_weights_path=str(weights_file),
        cuda=False,
        cache=False,
        verbose=False,
        batch_size=2,
        save_cpu_ram=True,
    )
    assert ours["fid"] > 0.1
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3, abs=1e-6)


@pytest.mark.slow
def test_second_eval_maps_the_decoded_sets_and_equals_an_uncached_run(weights_file, tmp_path):
    """The decoded-image cache: written once, mapped by the next run, replaced for changed content; same numbers without it."""
    from dsgan_cli.data.datacache import DECODE_COUNTER

    fake, real, data = tmp_path / "fake", tmp_path / "real", tmp_path / "data"
    write_images(fake, N, 32, seed=7, noise=20)
    write_images(real, N, 32, seed=8)
    kw = dict(inception_weights=weights_file, batch_size=2, progress=False)

    before = DECODE_COUNTER["images"]
    first = evaluate(fake, real, EvalOptions(cache_dir=tmp_path / "s1", data_cache_dir=data, **kw))
    assert DECODE_COUNTER["images"] - before == 2 * N
    entries = {p: p.stat().st_mtime_ns for p in data.glob("*.u8")}
    assert len(entries) == 2 and first["settings"]["data_cache_dir"] == str(data)

    # Fresh statistics cache, so the features are computed again, from the mapped pixels: nothing is decoded.
    second = evaluate(fake, real, EvalOptions(cache_dir=tmp_path / "s2", data_cache_dir=data, **kw))
    assert DECODE_COUNTER["images"] - before == 2 * N
    assert {p: p.stat().st_mtime_ns for p in data.glob("*.u8")} == entries
    assert second["real_stats_cached"] is False and second["fid"] == first["fid"]
    assert second["frequency"] == first["frequency"]

    uncached = evaluate(fake, real, EvalOptions(cache_dir=tmp_path / "s3", data_cache_dir="none", **kw))
    assert uncached["settings"]["data_cache_dir"] is None and set(data.glob("*.u8")) == set(entries)
    for k in ("fid", "kid_mean", "kid_std", "frequency", "counts", "resized_counts", "converted_counts"):
        assert uncached[k] == first[k], k

    # A changed real image: the real set is decoded again into a new entry, the fake set is mapped as before.
    victim = sorted(real.iterdir())[0]
    Image.fromarray(synthetic_face_like(32, 4242)).save(victim)
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
    mark = DECODE_COUNTER["images"]
    changed = evaluate(fake, real, EvalOptions(cache_dir=tmp_path / "s2", data_cache_dir=data, **kw))
    assert DECODE_COUNTER["images"] - mark == N and len(set(data.glob("*.u8")) - set(entries)) == 1
    assert changed["frequency"]["sets"]["real"] != first["frequency"]["sets"]["real"]
    for k in ("count", "noise", "noise_std", "spectrum"):  # (its distance to the changed real set changes, of course)
        assert changed["frequency"]["sets"]["fake"][k] == first["frequency"]["sets"]["fake"][k], k


@pytest.mark.slow
def test_the_real_floor_is_torch_fidelitys_fid_between_the_seeded_halves(weights_file, folders, tmp_path):
    """The floor: the real set split into two seeded random halves, FID between them, as torch-fidelity computes it."""
    import numpy as np
    from torch_fidelity import calculate_metrics

    write_images(tmp_path / "real", 7, 32, seed=6, noise=10)
    ours = evaluate(
        folders["noisy"],
        tmp_path / "real",
        EvalOptions(
            inception_weights=weights_file, cache_dir=folders["cache"], data_cache_dir=folders["data"], batch_size=4, progress=False
        ),
    )
    floor = ours["floor"]
    real = sorted((tmp_path / "real").glob("*.png"))
    order = np.random.default_rng(floor["seed"]).permutation(len(real))
    halves = [tmp_path / "h1", tmp_path / "h2"]
    for folder, idx in zip(halves, (order[: len(real) // 2], order[len(real) // 2 :])):
        folder.mkdir()
        for i in idx:
            shutil.copy(real[i], folder / real[i].name)
    assert floor["halves"] == [len(list(h.iterdir())) for h in halves] == [3, 4]
    theirs = calculate_metrics(
        input1=str(halves[0]),
        input2=str(halves[1]),
        fid=True,
        feature_extractor_weights_path=str(weights_file),
        cuda=False,
        cache=False,
        verbose=False,
        batch_size=2,
        save_cpu_ram=True,
    )
    assert floor["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["reference_xb"] is None and ours["closes"] is None  # no reference: no Xb baseline


@pytest.mark.slow
def test_xd_equal_to_xb_closes_nothing_and_the_verdict_says_so(weights_file, tmp_path, cli):
    """With --reference: the Xb baseline is the reference's bicubic downscale; a fake set that IS Xb closes 0%."""
    from dsgan_cli.data.images import image_to_tensor, load_rgb, tensor_to_image
    from dsgan_cli.method.models import downscale

    hr, fake, real = tmp_path / "hr", tmp_path / "fake", tmp_path / "real"
    write_images(hr, 6, 64, seed=4)
    write_images(real, 8, 32, seed=5, noise=20)
    fake.mkdir()
    for p in sorted(hr.iterdir()):
        tensor_to_image(downscale(image_to_tensor(load_rgb(p)[0])[None], 2)[0]).save(fake / p.name)
    proc = cli(
        "eval",
        fake,
        real,
        "--reference",
        hr,
        "--json",
        tmp_path / "r.json",
        "--inception-weights",
        weights_file,
        "--batch-size",
        "4",
        "--cache-dir",
        tmp_path / "c",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["reference_xb"]["fid"] == pytest.approx(data["fid"], rel=1e-6), "Xd = Xb must have Xb's FID"
    eq = data["equal_sizes"]
    assert eq["sizes"] == [4, 4] and eq["fake_fid"] == pytest.approx(eq["xb_fid"], rel=1e-6)
    if eq["xb_fid"] > data["floor"]["fid"]:
        assert data["closes"] == pytest.approx(0.0, abs=1e-6)
        assert "Xd closes 0% of the way from Xb" in proc.stdout
    else:
        assert data["closes"] is None and "Xb is already at the real floor" in proc.stdout
    assert data["plot"] == str(tmp_path / "r_spectrum.png"), "the plot goes beside the JSON report"


def test_eval_help_says_what_reference_adds(cli):
    res = cli("eval", "--help", env={"COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    said = " ".join(res.stdout.split())
    reference = said[said.index("--reference") : said.index("--json")]
    for what in ("baseline", "Xb", "real floor", "two halves of the real set", "verdict"):
        assert what in reference, (what, reference)
