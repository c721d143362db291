"""model.blur_source = "read": the real LR's blur is read off the two sets' power spectra before training, and G
blurs by it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_RECIPE, chw, run_cli
from PIL import Image
from safetensors import safe_open
from scipy import ndimage

from dsgan_cli.commands.demo_data import HR_SOURCES, LR_SOURCES
from dsgan_cli.data import known
from dsgan_cli.data.family import anisotropic_gaussian
from dsgan_cli.method.blur_reading import MIN_TILES, BlurReading, fit_blur, read_blur
from dsgan_cli.method.models import BlurKernel, cov_axes, kernel_axes
from dsgan_cli.method.recipe import load_recipe
from dsgan_cli.plumbing.errors import DsganError


def _photo_patches(names, n: int, size: int, seed: int) -> list[np.ndarray]:
    return known.patches(known.pyramid(names, (320,)), n, size, np.random.default_rng(seed), flip=False)


def _as_tensor(arrs) -> torch.Tensor:
    return torch.stack([chw(np.ascontiguousarray(a)) for a in arrs])


# Clean HR patches of some photographs; the real LR are other photographs' clean Xb, then degraded, as a user's
# two sets are.
HR = _as_tensor(_photo_patches(HR_SOURCES, 96, 64, seed=0))
PHOTOS = [known.xb_of(p, 2) for p in _photo_patches(LR_SOURCES, 96, 64, seed=1)]


def _known(**how) -> torch.Tensor:
    rng = np.random.default_rng(7)
    return _as_tensor([known.degrade(p, rng, **how) for p in PHOTOS])


def _convolved(kernel: np.ndarray) -> torch.Tensor:
    def one(p):
        x = np.stack([ndimage.convolve(p[..., c].astype(np.float64), kernel, mode="reflect") for c in range(3)], -1)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    return _as_tensor([one(p) for p in PHOTOS])


def _angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def test_unblurred_real_lr_read_no_blur_whatever_their_contrast():
    """Other photos' plain Xb read no blur, and a set of duller photos (less contrast, brighter) reads the same:
    the fit's constant takes a difference of contrast, which would otherwise read as blur."""
    plain = cov_axes(read_blur(HR, _as_tensor(PHOTOS), 2).cov)
    dull = cov_axes(read_blur(HR, _as_tensor([(p * 0.6 + 50).astype(np.uint8) for p in PHOTOS]), 2).cov)
    assert plain[0] < 0.3 and dull[0] < 0.3, (plain, dull)
    assert abs(plain[0] - dull[0]) < 0.05


def test_a_gaussian_blur_reads_about_its_size_and_more_blur_reads_more():
    majors = []
    for sigma in (0.8, 1.0, 1.6, 2.0):
        major, minor, _ = cov_axes(read_blur(HR, _known(blur=sigma), 2).cov)
        majors.append(major)
        assert 0.6 * sigma < major < 1.1 * sigma, (sigma, major, minor)
    assert majors == sorted(majors), majors


@pytest.mark.parametrize("angle", [0.0, 45.0, 120.0])
def test_an_anisotropic_blur_reads_its_orientation(angle):
    """A 1.6 x 0.4 px Gaussian at three angles: the reading's long axis lies along the kernel's (as G's kernel is
    reported, from the weights' second moments) and is far longer than its short one."""
    kernel = anisotropic_gaussian(1.6, 0.4, angle)
    _, _, truth = kernel_axes(torch.from_numpy(kernel))
    major, minor, got = cov_axes(read_blur(HR, _convolved(kernel), 2).cov)
    assert _angle_gap(got, truth) < 15, (got, truth)
    assert major > 1.0 and minor < 0.5 and major > 2.5 * minor, (major, minor)


def _line(length: float, angle: float, size: int = 9) -> np.ndarray:
    """A straight motion blur of ``length`` px at ``angle`` degrees (counter-clockwise from x, y up): points every
    1/32 px along it, each shared bilinearly among its four nearest taps."""
    k = np.zeros((size, size))
    t = np.linspace(-length / 2, length / 2, int(32 * length) + 1)
    x = (size - 1) / 2 + t * np.cos(np.radians(angle))
    y = (size - 1) / 2 - t * np.sin(np.radians(angle))  # rows run down
    for xi, yi in zip(x, y):
        x0, y0 = int(np.floor(xi)), int(np.floor(yi))
        fx, fy = xi - x0, yi - y0
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    return k / k.sum()


@pytest.mark.parametrize("angle", [0.0, 60.0, 135.0])
def test_a_long_motion_blur_reads_as_a_line_of_its_length_and_direction(angle):
    """A 7-px motion blur (sd 2.0 px along it), whose transfer function falls to zero inside the fitted band: the
    Gaussian alone reads it short (about 1.4 px); the reading finds a line of about its length in its direction,
    and G's kernel started at the reading has about the blur's spread along it, in the same direction."""
    kernel = _line(7.0, angle)
    truth_major, _, truth = kernel_axes(torch.from_numpy(kernel))
    assert _angle_gap(truth, angle) < 1 and 2.0 < truth_major < 2.2
    reading = read_blur(HR, _convolved(kernel), 2)
    length, along = reading.line
    assert 5.5 <= length <= 8.0 and _angle_gap(along, angle) < 8, reading.describe()
    assert reading.describe().startswith(f"motion blur {length:.1f} px at {along:.0f} deg, then blur sd"), reading.describe()
    g = BlurKernel(9)
    g.start_at(reading.cov, reading.centres())
    major, minor, got = kernel_axes(g.kernel())
    assert major == pytest.approx(truth_major, rel=0.15) and minor < 0.7 and _angle_gap(got, angle) < 8, (major, minor, got)


@pytest.mark.parametrize(
    "name", ["none", "gaussian 1.6", "gaussian 3", "gaussian 4", "anisotropic 1.6 x 0.4", "motion 3", "JPEG q30", "noise 8"]
)
def test_other_blurs_codecs_and_noise_read_no_line(name):
    """Where no long straight blur is there, the Gaussian reading stands alone (a short line at some angle would take
    up the two photo sets' differences)."""
    lr = {
        "none": lambda: _as_tensor(PHOTOS),
        "gaussian 1.6": lambda: _known(blur=1.6),
        "gaussian 3": lambda: _known(blur=3.0),  # strong blurs leave few frequencies to fit a line to
        "gaussian 4": lambda: _known(blur=4.0),
        "anisotropic 1.6 x 0.4": lambda: _convolved(anisotropic_gaussian(1.6, 0.4, 30.0)),
        "motion 3": lambda: _convolved(_line(3.0, 30.0)),
        "JPEG q30": lambda: _known(jpeg=30),
        "noise 8": lambda: _known(noise=8.0),
    }[name]()
    reading = read_blur(HR, lr, 2)
    assert reading.line is None and reading.describe().startswith("blur sd"), reading.describe()


@pytest.mark.parametrize("length, angle", [(7.0, 30.0), (4.5, 134.0), (8.5, 92.0)])
def test_an_exact_line_spectrum_fits_that_line_and_its_gaussian(length, angle):
    """Spectra built by hand: the clean one flat, the real one a line's sinc^2 (numpy's sinc, the direction
    (cos a, -sin a) with rows running down) times a Gaussian's exp(-4 pi^2 f'Cf) and a constant. The fit gives back
    exactly that line and about that covariance."""
    f = np.fft.fftfreq(32)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    cov = np.array([[0.5, 0.1], [0.1, 0.3]])
    gauss = np.exp(-4 * np.pi**2 * (cov[0, 0] * fx**2 + 2 * cov[0, 1] * fx * fy + cov[1, 1] * fy**2))
    a = np.radians(angle)
    real = 0.7 * np.sinc(length * (fx * np.cos(a) - fy * np.sin(a))) ** 2 * gauss
    got_cov, line = fit_blur(torch.from_numpy(real), torch.ones(32, 32, dtype=torch.float64))
    assert line == (length, angle)
    assert torch.allclose(got_cov, torch.from_numpy(cov), atol=0.02), got_cov


def test_a_line_is_no_longer_than_g_s_kernel():
    """With a 5 x 5 kernel a 7-px motion blur reads no line longer than 5 px (the kernel would cut it short)."""
    lr = _convolved(_line(7.0, 0.0))
    assert read_blur(HR, lr, 2).line[0] > 5
    short = read_blur(HR, lr, 2, kernel=5)
    assert short.line is None or short.line[0] <= 5, short.describe()


def test_the_kernel_along_a_line_has_the_line_s_spread():
    """BlurKernel.start_at with a line: a 6-px line at 30 deg over the sharp start's Gaussian (variance 1/6 px^2)
    has variance 6^2 / 12 + 1/6 along the line and 1/6 across it, and is point symmetric."""
    k = BlurKernel(9)
    k.start_at(torch.zeros(2, 2, dtype=torch.float64), BlurReading(None, 1, 1, 16, 16, (6.0, 30.0)).centres())
    w = torch.softmax(k.logits.flatten(), 0).view_as(k.logits)
    assert torch.allclose(w, w.flip(0, 1), atol=1e-6)
    major, minor, angle = kernel_axes(w)
    assert major == pytest.approx((36 / 12 + 1 / 6) ** 0.5, rel=0.02) and minor == pytest.approx((1 / 6) ** 0.5, rel=0.03)
    assert _angle_gap(angle, 30.0) < 1


def test_grain_makes_the_reading_short_never_long():
    """Noise raises the real LR's power at the top of the band: the reading shrinks, it does not grow."""
    for sigma in (1.0, 1.6):
        plain = cov_axes(read_blur(HR, _known(blur=sigma), 2).cov)[0]
        noisy = cov_axes(read_blur(HR, _known(blur=sigma, noise=8.0), 2).cov)[0]
        assert noisy <= plain + 0.02, (sigma, plain, noisy)
    assert cov_axes(read_blur(HR, _known(noise=8.0), 2).cov)[0] < 0.3


def test_jpeg_alone_reads_no_blur():
    assert cov_axes(read_blur(HR, _known(jpeg=30), 2).cov)[0] < 0.3


def test_too_few_tiles_or_featureless_images_give_no_reading():
    reading = read_blur(HR[: MIN_TILES - 1], _known(blur=1.0), 2)
    assert reading.cov is None and "blur not read" in reading.describe()
    small = _as_tensor([p[:20, :20] for p in PHOTOS])  # under one 32-px tile each
    assert read_blur(HR, small, 2).cov is None
    flat = torch.full((20, 3, 32, 32), 128, dtype=torch.uint8)  # featureless: nothing to read a blur from
    assert read_blur(HR, flat, 2).cov is None


def test_the_kernel_starts_at_the_read_gaussian():
    """BlurKernel.start_at: the kernel's own second moments give back the covariance (well inside a 9 x 9 kernel);
    one narrower than the sharp start along one axis takes the sharp start's width there; one narrower along every
    axis (no blur read, or less than the sharp start's 0.41 px) is the identity."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rot = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)  # columns: the axes in (x right, y down)
    cov = rot @ torch.diag(torch.tensor([1.2**2, 0.6**2], dtype=torch.float64)) @ rot.T
    k = BlurKernel(9)
    k.start_at(cov)
    major, minor, angle = kernel_axes(k.kernel())
    want = cov_axes(cov)
    assert major == pytest.approx(want[0], rel=0.05) and minor == pytest.approx(want[1], rel=0.05), (major, minor, want)
    assert _angle_gap(angle, want[2]) < 2 and _angle_gap(angle, 30) < 2
    thin = BlurKernel(9)
    thin.start_at(torch.diag(torch.tensor([1.0, 0.01], dtype=torch.float64)))
    major, minor, angle = kernel_axes(thin.kernel())
    sharp_sd = kernel_axes(BlurKernel(9).kernel())[0]  # the sharp start's taps (I / 6 sampled at whole pixels)
    assert major == pytest.approx(1.0, rel=0.05) and minor == pytest.approx(sharp_sd, rel=0.02) and _angle_gap(angle, 0) < 1
    for narrow in (torch.zeros(2, 2, dtype=torch.float64), torch.diag(torch.tensor([0.15, 0.1], dtype=torch.float64))):
        none = BlurKernel(9)
        none.start_at(narrow)
        assert float(none.kernel().detach()[4, 4]) > 0.9999, none.kernel()
        assert torch.isfinite(none.logits).all()
    # What training prints (BlurReading.sharp) says what start_at does: no blur exactly where the kernel is the identity.
    for cov, line in (
        (torch.zeros(2, 2), None),
        (torch.diag(torch.tensor([0.15, 0.1])), None),
        (torch.diag(torch.tensor([0.2, 0.01])), None),
        (torch.zeros(2, 2), (4.0, 30.0)),
    ):
        reading = BlurReading(cov.double(), 1, 1, 16, 16, line)
        k = BlurKernel(9)
        k.start_at(reading.cov, reading.centres())
        assert reading.sharp == (float(k.kernel().detach()[4, 4]) > 0.9999), (cov, line)
    assert float(BlurKernel(9).kernel().detach()[4, 4]) < 0.9, "the sharp start itself blurs a little"


def test_blur_source_read_needs_a_blur_kernel():
    with pytest.raises(DsganError, match="model.blur_source = 'read' needs model.blur_kernel"):
        load_recipe(str(TINY_RECIPE), ["model.blur_kernel=0", 'model.blur_source="read"'])


def test_build_networks_fixes_g_blur_at_the_reading_and_the_gan_source_learns_it():
    from dsgan_cli.engines.train import build_networks

    fmts = dict.fromkeys("GDP", torch.contiguous_format)
    cov = torch.diag(torch.tensor([1.5**2, 0.5**2], dtype=torch.float64))
    r = load_recipe("idphoto", ["perceptual.weights=random", 'model.blur_source="read"'])
    G, *_ = build_networks(r, torch.device("cpu"), fmts, blur=BlurReading(cov, 1, 1, 16, 16))
    major, minor, angle = kernel_axes(G.blur.kernel())
    assert major == pytest.approx(1.5, rel=0.06) and minor == pytest.approx(0.5, rel=0.1) and _angle_gap(angle, 0) < 2
    line = BlurReading(torch.zeros(2, 2, dtype=torch.float64), 1, 1, 16, 16, (6.0, 90.0))
    G, *_ = build_networks(r, torch.device("cpu"), fmts, blur=line)  # a motion blur: G's kernel runs along it
    major, minor, angle = kernel_axes(G.blur.kernel())
    assert major == pytest.approx((36 / 12 + 1 / 6) ** 0.5, rel=0.03) and _angle_gap(angle, 90) < 1 and minor < 0.45
    assert not G.blur.logits.requires_grad
    G, *_ = build_networks(r, torch.device("cpu"), fmts)  # not read (or a resume): the sharp start, fixed
    assert torch.allclose(G.blur.logits, BlurKernel(9).logits) and not G.blur.logits.requires_grad
    r = load_recipe("idphoto", ["perceptual.weights=random", 'model.blur_source="gan"'])
    G, *_ = build_networks(r, torch.device("cpu"), fmts, blur=BlurReading(cov, 1, 1, 16, 16))
    assert torch.allclose(G.blur.logits, BlurKernel(9).logits) and G.blur.logits.requires_grad


def test_a_narrow_reading_is_no_blur_only_where_g_adds_no_grain():
    """Grain makes a reading short: with grain (G adds output noise) a reading narrower than the sharp start keeps
    the sharp start; without grain it is no blur, the identity. A wider reading is the same either way."""
    from dsgan_cli.engines.train import build_networks

    fmts = dict.fromkeys("GDP", torch.contiguous_format)
    r = load_recipe("idphoto", ["perceptual.weights=random"])
    narrow = BlurReading(torch.diag(torch.tensor([0.3**2, 0.1**2], dtype=torch.float64)), 1, 1, 16, 16)
    assert narrow.sharp
    grainy, *_ = build_networks(r, torch.device("cpu"), fmts, grain=True, blur=narrow)
    clean, *_ = build_networks(r, torch.device("cpu"), fmts, grain=False, blur=narrow)
    assert grainy.output_noise and not clean.output_noise
    assert torch.allclose(grainy.blur.kernel(), BlurKernel(9).kernel()), "under grain: the sharp start"
    assert float(clean.blur.kernel()[4, 4]) > 0.9999, "without grain: no blur"
    wide = BlurReading(torch.diag(torch.tensor([1.2**2, 0.3**2], dtype=torch.float64)), 1, 1, 16, 16)
    a, *_ = build_networks(r, torch.device("cpu"), fmts, grain=True, blur=wide)
    b, *_ = build_networks(r, torch.device("cpu"), fmts, grain=False, blur=wide)
    assert torch.equal(a.blur.kernel(), b.blur.kernel())


def _write(folder, arrs):
    folder.mkdir()
    for i, a in enumerate(arrs):
        Image.fromarray(a).save(folder / f"img_{i}.png")


def _images(folder) -> torch.Tensor:
    return _as_tensor([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def _exported_logits(run) -> torch.Tensor:
    with safe_open(run / "generator.safetensors", "pt") as f:
        assert json.loads(f.metadata()["recipe"])["model"]["blur_source"] == "read"
        return f.get_tensor("blur.logits")


def test_training_blurs_by_the_reading_and_a_resume_keeps_the_kernel(tmp_path):
    """A real CLI run with the read blur prints the reading and exports G's kernel exactly at it after training
    (fixed); the resume reads nothing and trains on with the checkpoint's kernel, unchanged."""
    from types import SimpleNamespace

    from dsgan_cli.engines.train import blur_for

    _write(tmp_path / "hr", _photo_patches(HR_SOURCES, 12, 128, seed=2))
    photos = [known.xb_of(p, 2) for p in _photo_patches(LR_SOURCES, 12, 128, seed=3)]
    rng = np.random.default_rng(7)
    _write(tmp_path / "lr", [known.degrade(p, rng, blur=1.5) for p in photos])
    sets = ["data.hr_size=128", "data.lr_size=64", "model.blur_kernel=9", 'model.blur_source="read"']
    args = ["train", str(TINY_RECIPE), *[a for s in sets for a in ("--set", s)]]
    args += ["--set", f"data.hr_dir='{tmp_path / 'hr'}'", "--set", f"data.lr_dir='{tmp_path / 'lr'}'"]
    args += ["--set", f"train.output_dir='{tmp_path / 'run'}'"]
    r = run_cli(*args, "--set", "train.iterations=2")
    assert r.returncode == 0, r.stderr
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("real LR: blur sd")]
    assert len(said) == 1 and "12 real LR and 12 HR images" in said[0] and "G blurs by it (fixed)" in said[0], r.stderr
    reading = read_blur(_images(tmp_path / "hr"), _images(tmp_path / "lr"), 2)
    assert 1.0 < cov_axes(reading.cov)[0] < 1.7, reading.describe()
    want = BlurKernel(9)
    assert reading.line is None, reading.describe()
    want.start_at(reading.cov)
    first = _exported_logits(tmp_path / "run")
    assert torch.allclose(first, want.logits), "G's blur is the reading, unmoved by training"

    recipe = load_recipe(str(TINY_RECIPE), sets)
    hr, lr = SimpleNamespace(images=HR), SimpleNamespace(images=_known(blur=1.5))
    ckpt = next((tmp_path / "run" / "checkpoints").iterdir())
    assert blur_for(recipe, hr, lr, say=False, resume_from=ckpt) is None
    assert blur_for(recipe, hr, lr, say=False) is not None
    r = run_cli(*args, "--set", "train.iterations=4", "--resume", "latest")
    assert r.returncode == 0, r.stderr
    assert "real LR: blur" not in r.stderr, r.stderr
    assert torch.equal(_exported_logits(tmp_path / "run"), first)


def _directional_contrast(images: list[np.ndarray], gain: float, angle: float) -> torch.Tensor:
    """Each image's spectrum scaled by a factor of the frequency's direction alone, 1 + gain cos 2(theta - angle) in
    power (the same at every |f|): more edges of one orientation, as another set of photos may hold, and no blur."""
    out = []
    for p in images:
        fy, fx = np.meshgrid(np.fft.fftfreq(p.shape[0]), np.fft.fftfreq(p.shape[1]), indexing="ij")
        theta = np.arctan2(-fy, fx)  # y up
        amp = np.sqrt(1 + gain * np.cos(2 * (theta - np.radians(angle))))
        amp[0, 0] = 1  # the mean brightness has no direction
        x = np.real(np.fft.ifft2(np.fft.fft2(p.astype(np.float64), axes=(0, 1)) * amp[..., None], axes=(0, 1)))
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return _as_tensor(out)


@pytest.mark.parametrize("angle", [60.0, 90.0, 150.0])
def test_more_edges_of_one_orientation_read_no_blur(angle):
    """Real LR whose photos hold more power across one direction than the clean set's, by the same factor at every
    |f|, are not blurred: the fit's per-direction contrast terms take the difference, which a Gaussian alone reads
    as a blur along that direction."""
    reading = read_blur(HR, _directional_contrast(PHOTOS, 0.6, angle), 2)
    assert reading.line is None and cov_axes(reading.cov)[0] < 0.3, cov_axes(reading.cov)


def test_a_gaussian_blur_under_a_difference_of_contrast_per_direction_reads_its_size():
    """The per-direction terms take the contrast, not the blur: an isotropic 1.6 px blur of photos with more edges
    of one orientation reads as the same blur of the plain photos does, along both axes."""
    rng = np.random.default_rng(7)
    blurred = [known.degrade(p, rng, blur=1.6) for p in PHOTOS]
    plain = cov_axes(read_blur(HR, _as_tensor(blurred), 2).cov)
    tilted = cov_axes(read_blur(HR, _directional_contrast(blurred, 0.6, 30.0), 2).cov)
    assert abs(tilted[0] - plain[0]) < 0.1 and abs(tilted[1] - plain[1]) < 0.1, (plain, tilted)


def test_frequencies_that_cannot_tell_the_terms_apart_give_no_reading():
    """Power on two rings of |f| only: a Gaussian's anisotropy (|f|^2 cos 2 theta) and a difference of contrast per
    direction (cos 2 theta) are then the same column up to the ring, and the fit would pick one of many answers."""
    f = torch.fft.fftfreq(32, dtype=torch.float64)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    k2 = (fx**2 + fy**2) * 32**2
    rings = ((k2 - 25).abs() < 1e-6) | ((k2 - 1).abs() < 1e-6)
    gaussian = torch.exp(-4 * np.pi**2 * (0.5 * fx**2 + 0.2 * fx * fy + 0.3 * fy**2))
    assert int(rings.sum()) >= 16  # enough frequencies: it is their layout that says nothing
    assert fit_blur(torch.where(rings, 0.7 * gaussian, torch.full_like(gaussian, 1e-6)), torch.ones(32, 32, dtype=torch.float64)) is None
