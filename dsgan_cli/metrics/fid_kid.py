"""FID and KID between sets of Inception features, and what they are measured against: the real floor (FID between
two seeded random halves of the real set), the bicubic Xb baseline, and the verdict at equal set sizes (how much of
the way from Xb to the floor the fake set closes). Sets are dicts {features, mu, sigma} (:func:`feature_set`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..plumbing.errors import DsganError
from . import fid as fidmod

#: Seed of the split of the real set into two halves (the floor): the same split on every run.
FLOOR_SEED = 0


def fid_between(a: dict, b: dict) -> float:
    """FID between two sets given as {features, mu, sigma}."""
    return fidmod.frechet_distance(a, b, a["features"], b["features"])


def fid_kid_between(a: dict, b: dict) -> dict:
    """FID and KID between two sets given as {features, mu, sigma}."""
    subset = fidmod.kid_subset_size(len(a["features"]), len(b["features"]))
    kid_mean, kid_std = fidmod.kernel_inception_distance(torch.from_numpy(a["features"]), torch.from_numpy(b["features"]), subset)
    return {"fid": fid_between(a, b), "kid_mean": kid_mean, "kid_std": kid_std, "kid_subset_size": subset}


def feature_set(features: np.ndarray) -> dict:
    """{features, mu, sigma} of a feature array."""
    return {"features": features, **fidmod.fid_statistics(torch.from_numpy(features))}


def seeded_subset(features: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``features`` chosen by a seeded permutation (all of them when there are fewer)."""
    return features[np.sort(np.random.default_rng(seed).permutation(len(features))[:n])]


def real_halves(real: dict, seed: int = FLOOR_SEED) -> tuple[dict, dict] | None:
    """The real set split into two seeded random halves (None below 4 images)."""
    f = real["features"]
    if len(f) < 4:
        return None
    order = np.random.default_rng(seed).permutation(len(f))
    return feature_set(f[np.sort(order[: len(f) // 2])]), feature_set(f[np.sort(order[len(f) // 2 :])])


def closes(fid_fake: float, fid_xb: float | None, fid_floor: float | None) -> float | None:
    """Fraction of the way from Xb's FID to the real floor that the fake set's FID covers (1 = at the floor)."""
    if fid_xb is None or fid_floor is None or fid_xb <= fid_floor:
        return None
    return (fid_xb - fid_fake) / (fid_xb - fid_floor)


def verdict_at_equal_sizes(fake: dict, xb: dict, halves: tuple[dict, dict], floor_fid: float) -> dict:
    """The fake set's and Xb's FID against the second real half, each with as many images as the first half:
    FID grows as sets shrink, so the floor (half against half) is compared with numbers of the same sizes.

    A set smaller than the half gives no verdict (``no_verdict`` says why): its FID would be measured on fewer
    images than the floor's and read as worse than it is. ``sizes`` are the counts actually used: each of the
    fake set and Xb, and the real half they are compared with."""
    a, b = halves
    n = len(a["features"])
    short = [f"{name} has {len(s['features'])}" for name, s in (("the fake set", fake), ("the reference Xb", xb)) if len(s["features"]) < n]
    if short:
        return {
            "fake_fid": None,
            "xb_fid": None,
            "floor_fid": floor_fid,
            "sizes": None,
            "closes": None,
            "no_verdict": f"{' and '.join(short)} images, fewer than the {n} of the real half the floor is "
            "measured on; FID is compared only at equal sizes",
        }
    f = fid_between(feature_set(seeded_subset(fake["features"], n, FLOOR_SEED + 1)), b)
    x = fid_between(feature_set(seeded_subset(xb["features"], n, FLOOR_SEED + 1)), b)
    return {"fake_fid": f, "xb_fid": x, "floor_fid": floor_fid, "sizes": [n, len(b["features"])], "closes": closes(f, x, floor_fid)}


def fid_kid(fake: dict, real: dict, ref: dict | None, warn: Callable[[str], None]) -> dict:
    """FID and KID of the fake against the real set; the real floor (two halves); with a reference, those of
    its Xb against the real set; and how far the fake set closes the way from Xb to the floor. Small sets are
    said through ``warn``."""
    n_fake, n_real = len(fake["features"]), len(real["features"])
    if n_fake < 2 or n_real < 2:
        raise DsganError(f"FID/KID need at least 2 readable images per set (fake: {n_fake}, real: {n_real})")
    out = fid_kid_between(fake, real)
    if min(n_fake, n_real) < fidmod.FID_MIN_RECOMMENDED:
        warn(
            f"small sets (fake: {n_fake}, real: {n_real} images): with fewer than "
            f"{fidmod.FID_MIN_RECOMMENDED} images per set FID is biased upward and noisy; compare FIDs only at "
            f"equal image counts and prefer KID (subset size {out['kid_subset_size']})"
        )
    halves = real_halves(real)
    floor = None
    if halves is not None:
        floor = {**fid_kid_between(*halves), "halves": [len(h["features"]) for h in halves], "seed": FLOOR_SEED}
    xb = fid_kid_between(ref, real) if ref is not None and len(ref["features"]) >= 2 else None
    if xb is not None:
        xb["sizes"] = [len(ref["features"]), n_real]
    equal = verdict_at_equal_sizes(fake, ref, halves, floor["fid"]) if floor is not None and xb is not None else None
    return {**out, "floor": floor, "reference_xb": xb, "equal_sizes": equal, "closes": equal and equal["closes"]}
