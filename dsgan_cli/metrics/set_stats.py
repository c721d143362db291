"""Per-set statistics of decoded image sets, for ``dsgan eval``: the frequency and structure statistics and (for
FID/KID) the Inception features with their mean and covariance, each cached by the decoded set's content key, so a
set seen before costs nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import fid as fidmod
from . import spectrum, structure


def extractor_device():
    """The device Accelerate picks (GPU when present, else CPU)."""
    from accelerate import PartialState

    return PartialState().device


def _stats_keys(data_key: str, weights) -> dict[str, str]:
    """Statistics cache keys of one decoded set (frequency; Inception with ``weights``)."""
    keys = {"frequency": fidmod.cache_key("frequency", data_key), "structure": fidmod.cache_key("structure", data_key)}
    if weights is not None:
        keys["inception"] = fidmod.cache_key(
            "inception", data_key, extractor=fidmod.EXTRACTOR_NAME, layer=fidmod.FEATURE_LAYER, weights=weights.identity
        )
    return keys


def _compute_stats(images, kinds: set[str], model, batch_size: int, advance) -> dict[str, dict[str, np.ndarray]]:
    """Frequency statistics and (with ``model``) Inception features, mean and covariance of one decoded set."""
    out = {}
    if "frequency" in kinds:
        s = spectrum.set_stats(img.permute(1, 2, 0).numpy() for img in images)
        out["frequency"] = {
            "count": np.array([s["count"]], np.int64),
            "spectrum": s["spectrum"],
            "noise": np.array([s["noise"]]),
            "noise_std": np.array([s["noise_std"]]),
        }
    if "structure" in kinds:
        out["structure"] = structure.set_structure(img.permute(1, 2, 0).numpy().astype(np.float64) for img in images)
    if "inception" in kinds:
        feats = []
        for i in range(0, len(images), batch_size):
            feats.append(fidmod.extract(model, images[i : i + batch_size]).numpy())
            advance(len(images[i : i + batch_size]))
        f = np.concatenate(feats).astype(np.float32)
        out["inception"] = {"features": f, **fidmod.fid_statistics(torch.from_numpy(f))}
    return out


def set_statistics(decoded: dict, weights, cache_dir: Path, batch_size: int, bar) -> tuple[dict[str, dict], dict[str, bool]]:
    """Per-set statistics from the cache, else computed once and cached; (stats, cached).

    ``decoded`` maps each set's name to (its :class:`ImageSet`, its decode-cache metadata with the content
    ``key``); ``weights`` (None: no FID) are the Inception weights; ``bar`` shows the feature extraction."""
    keys = {name: _stats_keys(meta["key"], weights) for name, (_, meta) in decoded.items()}
    # Looked up before anything is computed, so "cached" means an entry from an earlier run.
    # An entry with missing, misshapen or non-finite arrays is recomputed, never used.
    found = {
        name: {
            kind: fidmod.cache_load(cache_dir / f"{kind}-{key}.safetensors", fidmod.statistics_shapes(kind, len(decoded[name][0].images)))
            for kind, key in ks.items()
        }
        for name, ks in keys.items()
    }
    model = None
    if weights is not None and any(v is None for ks in found.values() for v in ks.values()):
        model = fidmod.build_extractor(weights, extractor_device())
    stats, cached, done = {}, {}, {}
    for name, (image_set, _) in decoded.items():
        cached[name] = all(v is not None for v in found[name].values())
        todo = {kind for kind, v in found[name].items() if v is None and keys[name][kind] not in done}
        task = bar.add_task(f"features {name:>7}", total=len(image_set.images)) if "inception" in todo else None
        fresh = _compute_stats(image_set.images, todo, model, batch_size, lambda n, task=task: bar.advance(task, n))
        for kind, arrays in fresh.items():
            done[keys[name][kind]] = arrays
            fidmod.cache_save(cache_dir / f"{kind}-{keys[name][kind]}.safetensors", arrays)
        stats[name] = {kind: found[name][kind] if found[name][kind] is not None else done[key] for kind, key in keys[name].items()}
    return stats, cached
