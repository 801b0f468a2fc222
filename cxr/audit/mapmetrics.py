"""Properties of the maps themselves, each next to maps that know nothing (uniform noise, a
centred Gaussian) so that a number can be read:

- Average Drop and Increase in Confidence (Chattopadhyay et al. 2018): the target class's
  probability on the image multiplied by its map, against the image's own; a faithful map keeps
  the evidence, so the probability drops little;
- sparseness, the Gini index of the map (Chalasani et al. 2020): 0 spread evenly, 1 one pixel;
- complexity, the entropy of the map as a distribution over pixels, over its maximum (Bhatt et al.
  2020): 1 uniform;
- max-sensitivity (Yeh et al. 2019): the largest relative change of the map, over a few seeded
  perturbations of the image by uniform noise of 2% of its range; a robust map moves little;
- the random-logit test (Sixt et al. 2020): the rank correlation of the map of another, random
  class with the target's; a map that explains the class should change with it (EigenCAM, which
  knows no class, scores 1).
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from cxr.audit.faithfulness import batched_logits
from cxr.audit.inputs import AuditInputs
from cxr.audit.localisation import with_baseline_maps
from cxr.explain.methods import explain_methods
from cxr.explain.probe import Probe
from cxr.explain.report import output_probabilities
from cxr.results.audit import MapMetrics
from cxr.stats import ranked, ranked_correlation


def gini(heatmap: np.ndarray) -> float:
    """The Gini index of the map's absolute values (0 when all equal, or the map is empty)."""
    values = np.sort(np.abs(heatmap).ravel())
    total, n = values.sum(), len(values)
    if total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))


def normalised_entropy(heatmap: np.ndarray) -> float:
    """The entropy of the map's absolute values as a distribution, over log(pixels): 1 uniform."""
    values = np.abs(heatmap).ravel()
    if values.sum() <= 0:
        return float("nan")
    p = values / values.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(values.size))


def target_probabilities(
    model: keras.Model,
    images: np.ndarray,
    targets: np.ndarray,
    batch: int = 32,
    multi_label: bool = False,
) -> np.ndarray:
    """Each image's probability of its target class: a softmax over the classes, or for a
    multi-label model the finding's own sigmoid (the findings do not compete)."""
    probs = output_probabilities(batched_logits(model, images, batch), multi_label)
    return probs[np.arange(len(images)), targets]


SENSITIVITY_DRAWS, SENSITIVITY_RADIUS = 8, 0.02  # perturbations, noise as a share of 255


def max_sensitivity(
    probe: Probe,
    images: np.ndarray,
    targets: np.ndarray,
    maps: dict[str, np.ndarray],
    seed: int,
) -> dict[str, np.ndarray]:
    """Per method and image: max over seeded perturbations of |map(x + noise) - map(x)| /
    |map(x)| (Frobenius norms; NaN for an empty map). Every method sees the same perturbations,
    explained together (cxr.explain.methods.explain_methods)."""
    rng = np.random.default_rng(seed)
    flat = {method: found.reshape(len(found), -1) for method, found in maps.items()}
    worst = {method: np.zeros(len(images)) for method in maps}
    for _ in range(SENSITIVITY_DRAWS):
        noise = rng.uniform(-1, 1, images.shape) * SENSITIVITY_RADIUS * 255
        moved = explain_methods(probe, images + noise, targets, list(maps), pad_to=len(images))
        for method, found in moved.items():
            change = np.linalg.norm(found.maps.reshape(len(images), -1) - flat[method], axis=1)
            worst[method] = np.maximum(worst[method], change)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            method: np.where(norms > 0, worst[method] / norms, np.nan)
            for method, norms in ((m, np.linalg.norm(f, axis=1)) for m, f in flat.items())
        }


def other_classes(targets: np.ndarray, classes: int, rng: np.random.Generator) -> np.ndarray:
    """A random class other than each target (the other one, for two)."""
    shift = rng.integers(1, classes, size=len(targets))
    return (targets + shift) % classes


def map_metric_rows(
    model: keras.Model,
    probe: Probe,
    images: np.ndarray,
    targets: np.ndarray,
    maps: dict[str, np.ndarray],
    names: list[str],
    classes: int,
    seed: int = 0,
    multi_label: bool = False,
    batch: int = 32,
) -> pd.DataFrame:
    """One row per image and method (and baseline map): the target probability on the image and
    on the image times the map, sparseness, complexity, and (methods only) the random-logit rank
    correlation."""
    rng = np.random.default_rng(seed)
    full = target_probabilities(model, images, targets, batch, multi_label)
    every = with_baseline_maps(maps, len(images), images.shape[1:3], rng)
    others = other_classes(targets, classes, rng) if classes > 1 else None
    sensitivities = max_sensitivity(probe, images, targets, maps, seed)
    theirs = (
        explain_methods(probe, images, others, list(maps), pad_to=len(images))
        if others is not None
        else {}
    )
    rows = []
    for method, found in every.items():
        masked = target_probabilities(model, images * found[..., None], targets, batch, multi_label)
        random_logit = [np.nan] * len(images)
        sensitivity = sensitivities.get(method, np.full(len(images), np.nan))
        if method in theirs:
            random_logit = [
                ranked_correlation(ranked(a), ranked(b))
                for a, b in zip(found, theirs[method].maps, strict=True)
            ]
        for i, name in enumerate(names):
            rows.append(
                {
                    "image": name,
                    "method": method,
                    "probability": float(full[i]),
                    "probability_on_map": float(masked[i]),
                    "sparseness": gini(found[i]),
                    "complexity": normalised_entropy(found[i]),
                    "random_logit_spearman": float(random_logit[i]),
                    "max_sensitivity": float(sensitivity[i]),
                }
            )
    return pd.DataFrame(rows)


def summarise_map_metrics(rows: pd.DataFrame) -> dict[str, MapMetrics]:
    """Per method and baseline: Average Drop (%), Increase in Confidence (%), mean sparseness,
    complexity and random-logit rank correlation."""
    summary = {}
    for method, part in rows.groupby("method", sort=False):
        full, masked = part["probability"], part["probability_on_map"]
        drop = np.maximum(full - masked, 0) / full.where(full > 0)
        summary[str(method)] = MapMetrics(
            images=len(part),
            average_drop=float(100 * drop.mean()),
            increase_in_confidence=float(100 * (masked > full).mean()),
            sparseness=float(part["sparseness"].mean()),
            complexity=float(part["complexity"].mean()),
            random_logit_spearman=float(part["random_logit_spearman"].mean()),
            max_sensitivity=float(part["max_sensitivity"].mean()),
        )
    return summary


def map_metrics_of(inputs: AuditInputs) -> pd.DataFrame:
    """The map properties of the audit's sample, every method (its own baseline maps drawn
    alike)."""
    return map_metric_rows(
        inputs.fused,
        inputs.probe,
        inputs.images,
        inputs.targets,
        inputs.maps,
        inputs.names,
        len(inputs.trained.classes),
        inputs.fold,
        inputs.multi_label,
        inputs.batch,
    )
