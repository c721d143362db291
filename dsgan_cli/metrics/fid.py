"""FID and KID with torch-fidelity's Inception-v3 extractor: offline weights, safe loading, cached real statistics.

* Features: torch-fidelity's ``FeatureExtractorInceptionV3`` (the
  ``inception-v3-compat`` extractor, 2048-d pool features, images resized to
  299x299 inside the network exactly as torch-fidelity does).
* Weights: ``--inception-weights PATH`` / ``DSGAN_INCEPTION_WEIGHTS``, else
  torch-fidelity's file in the torch hub cache, else downloaded there (not
  when ``DSGAN_OFFLINE`` is set), found by :mod:`dsgan_cli.method.weights`. Files are read with
  ``torch.load(weights_only=True)`` or safetensors and handed to the
  extractor, because torch-fidelity's own loader unpickles user files.
* FID: torch-fidelity's ``fid_features_to_statistics`` for mean and
  covariance; the trace term ``tr((S1 S2)^1/2)`` is computed exactly with
  symmetric decompositions (see :func:`trace_sqrt_product`), which gives the
  same number as torch-fidelity's ``fid_statistics_to_metric`` (non-symmetric
  ``eigvals``) in a fraction of its time (BENCHMARKS.md, "FID").
* KID: torch-fidelity's ``kid_features_to_metric`` (polynomial kernel, 100
  subsets) with the subset size adapted to the smaller set.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..method import weights as pretrained
from ..plumbing.errors import DsganError, file_error
from ..plumbing.reads import file_sha256 as read_file_sha256
from ..plumbing.tensor_files import load_weights_file

#: torch-fidelity's Inception-v3 weights (converted from the TensorFlow FID graph).
INCEPTION_URL = pretrained.INCEPTION.url
EXTRACTOR_NAME = "inception-v3-compat"
FEATURE_LAYER = "2048"
FEATURE_DIM = 2048
WEIGHTS_ENV = "DSGAN_INCEPTION_WEIGHTS"
#: Below this many images per set the 2048x2048 covariance is rank-deficient and FID is biased upward.
FID_MIN_RECOMMENDED = 2048
KID_MAX_SUBSET = 1000
KID_SUBSETS = 100
#: Bump when the cached arrays change meaning.
CACHE_VERSION = 1


@dataclass(frozen=True)
class InceptionWeights:
    """Where the Inception weights come from: ``kind`` is "file", "hub-cache" or "random"."""

    kind: str
    path: Path | None
    identity: str

    def describe(self) -> str:
        """Human-readable source, for the settings in the report."""
        if self.kind == "random":
            return "random (explicitly requested; numbers are NOT comparable to published FIDs)"
        return str(self.path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (remembered per path, size, mtime and ctime within a process)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """SHA-256 of ``path``; size, mtime and ctime are part of the cache key only."""
    return read_file_sha256(path)


def resolve_weights(path: str | Path | None = None, allow_random: bool = False) -> InceptionWeights:
    """Find the Inception weights: explicit path, ``DSGAN_INCEPTION_WEIGHTS``, hub cache, download, or random if asked.

    Never falls back to random weights unless ``allow_random`` is set.
    """
    if path is None and os.environ.get(WEIGHTS_ENV):
        path = os.environ[WEIGHTS_ENV]
    if path is None and allow_random:
        return InceptionWeights("random", None, "random-he-init-seed-0")
    found = pretrained.resolve(pretrained.INCEPTION, path)
    return InceptionWeights("hub-cache" if path is None else "file", found, "sha256:" + file_sha256(found))


def load_state_dict_safely(path: Path) -> dict[str, torch.Tensor]:
    """Read Inception weights without unpickling code."""
    return load_weights_file(path, "Inception weights (torch-fidelity's Inception-v3)")


_KEEP_INIT = object()


def _extractor_class():
    """torch-fidelity's extractor, with weight loading routed through this module."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class InceptionV3(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: D102 - see class doc
            if state_dict is _KEEP_INIT:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    return InceptionV3


def build_extractor(weights: InceptionWeights, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's Inception-v3 feature extractor (2048-d features) with ``weights``, in eval mode on ``device``."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    state = _KEEP_INIT if weights.kind == "random" else load_state_dict_safely(weights.path)
    cls = _extractor_class()
    original = fe.load_state_dict_from_url
    # torch-fidelity reads the weights itself inside __init__ (downloading, or
    # unpickling a given path); handing it the already safely loaded dict
    # through its download hook keeps its architecture code untouched.
    fe.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # "random" weights are the same on every run, so caching them is sound
            model = cls(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=None, verbose=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise file_error(weights.path, f"not torch-fidelity's Inception-v3 weights ({first[:200]})") from None
    finally:
        fe.load_state_dict_from_url = original
    if weights.kind == "random":
        _random_init_(model)
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        # channels_last ran the extractor faster than NCHW on CPU, with the same features (BENCHMARKS.md, "FID").
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def _random_init_(model: torch.nn.Module, seed: int = 0) -> None:
    """Variance-preserving (He) random init of every conv, fixed seed.

    PyTorch's default conv init shrinks activations layer by layer until all
    2048 pool features are ~1e-8 and every image set looks alike; He init keeps
    them apart, which the tests need (FID(A, noisy A) > 0).
    """
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=g)


def random_state_dict() -> dict[str, torch.Tensor]:
    """State dict of the randomly initialised extractor (what ``--random-inception`` uses); for test weights files."""
    model = build_extractor(InceptionWeights("random", None, "random-he-init-seed-0"))
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@torch.inference_mode()
def extract(model: torch.nn.Module, batch_uint8: torch.Tensor) -> torch.Tensor:
    """2048-d features (float32, CPU) of a uint8 batch (B, 3, H, W)."""
    device = next(model.parameters()).device
    x = batch_uint8.to(device)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)[0].float().cpu()


def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance of features (torch-fidelity's ``fid_features_to_statistics``)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.double())


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    w, v = torch.linalg.eigh(m)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def trace_sqrt_product(f1: np.ndarray | None, f2: np.ndarray | None, sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^1/2) for covariances S1, S2 (exact; float64).

    With few samples (n1, n2 < dim) and the features at hand, the non-zero
    eigenvalues of S1 S2 are the squared singular values of
    ``X1c X2c^T / sqrt((n1-1)(n2-1))`` (X centred features), so the trace is
    that small matrix's nuclear norm. Otherwise S1 S2 is similar to the
    symmetric ``L^T S2 L`` (``S1 = L L^T``, Cholesky), whose eigenvalues
    ``eigvalsh`` finds stably.
    """
    if f1 is not None and f2 is not None and max(len(f1), len(f2)) < sigma1.shape[0]:
        x1 = torch.from_numpy(np.asarray(f1, dtype=np.float64))
        x2 = torch.from_numpy(np.asarray(f2, dtype=np.float64))
        x1, x2 = x1 - x1.mean(0), x2 - x2.mean(0)
        s = torch.linalg.svdvals(x1 @ x2.T)
        return float(s.sum() / np.sqrt((len(f1) - 1) * (len(f2) - 1)))
    s1 = torch.from_numpy(np.asarray(sigma1, dtype=np.float64))
    s2 = torch.from_numpy(np.asarray(sigma2, dtype=np.float64))
    chol, info = torch.linalg.cholesky_ex(s1)
    # With S1 = L L^T, S1 S2 is similar to the symmetric L^T S2 L: one values-only
    # decomposition. A singular S1 has no Cholesky factor; then R = S1^1/2.
    r = chol if int(info) == 0 else _sqrt_psd(s1)
    a = r.T @ s2 @ r
    w = torch.linalg.eigvalsh((a + a.T) / 2)
    return float(w.clamp_min(0).sqrt().sum())


def frechet_distance(stats1: dict, stats2: dict, f1: np.ndarray | None = None, f2: np.ndarray | None = None) -> float:
    """FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2); features (optional) speed up small sets."""
    mu1, mu2 = np.asarray(stats1["mu"], np.float64), np.asarray(stats2["mu"], np.float64)
    s1, s2 = np.asarray(stats1["sigma"], np.float64), np.asarray(stats2["sigma"], np.float64)
    diff = mu1 - mu2
    fid = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(f1, f2, s1, s2))
    # Rounding can leave a tiny negative number for identical sets; FID itself is never negative.
    return max(fid, 0.0)


def kid_subset_size(n1: int, n2: int) -> int:
    """KID subset size: torch-fidelity's 1000, or the smaller set size when a set is smaller."""
    return min(KID_MAX_SUBSET, n1, n2)


def kernel_inception_distance(f1: torch.Tensor, f2: torch.Tensor, subset_size: int) -> tuple[float, float]:
    """(mean, std) of KID over ``KID_SUBSETS`` random subsets (torch-fidelity's ``kid_features_to_metric``)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = kid_features_to_metric(f1.float(), f2.float(), kid_subset_size=subset_size, kid_subsets=KID_SUBSETS, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """The statistics cache: ``$XDG_CACHE_HOME/dsgan-cli/fid`` (see :func:`dsgan_cli.data.datacache.user_cache_dir`)."""
    from ..data.datacache import user_cache_dir

    return user_cache_dir("fid")


def cache_key(kind: str, data_key: str, **settings) -> str:
    """Hex key over a decoded set's content key (:mod:`dsgan_cli.data.datacache`) and everything else that changes the numbers."""
    payload = json.dumps({"v": CACHE_VERSION, "kind": kind, "data": data_key, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def cache_load(path: Path, shapes: dict[str, tuple[int | None, ...]] | None = None) -> dict[str, np.ndarray] | None:
    """Arrays from a cache file, or None (then it is recomputed) when it is missing, unreadable, or does not hold
    exactly the arrays ``shapes`` names, each of that shape (None = any length) and finite."""
    if not path.is_file():
        return None
    try:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    except Exception:  # noqa: BLE001 - a damaged cache entry is simply recomputed
        return None
    if shapes is None:
        return arrays
    if set(arrays) != set(shapes):
        return None
    for name, shape in shapes.items():
        a = arrays[name]
        if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
            return None
        if a.dtype.kind not in "iuf" or (a.dtype.kind == "f" and not np.isfinite(a).all()):
            return None
    return arrays


def statistics_shapes(kind: str, n_images: int) -> dict[str, tuple[int | None, ...]]:
    """The arrays a statistics cache entry of ``kind`` ("frequency", "structure" or "inception") holds for a set of ``n_images``."""
    if kind == "frequency":
        return {"count": (1,), "spectrum": (None,), "noise": (1,), "noise_std": (1,)}
    if kind == "structure":
        from .structure import MAX_LAG

        lags = 2 * MAX_LAG + 1
        return {"count": (1,), "autocorrelation": (lags, lags), "channel_correlation": (3, 3), "spectrum_2d": (None, None)}
    return {"features": (n_images, FEATURE_DIM), "mu": (FEATURE_DIM,), "sigma": (FEATURE_DIM, FEATURE_DIM)}


def cache_save(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write arrays to a safetensors cache file atomically; False (no error) when the cache is not writable."""
    from safetensors.numpy import save

    from ..plumbing.writes import write_bytes_atomic

    try:
        write_bytes_atomic(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
        return True
    except (OSError, DsganError):  # not writable, or the cache path is a symlink or special file
        return False
