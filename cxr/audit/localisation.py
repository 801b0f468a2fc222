"""Does a map point at the finding? Pointing game, IoU and T(IoBB) against boxes, with baselines.

- pointing game / hit rate: the map's arg-max lies inside a box (as CheXlocalize scores it);
- IoU of the thresholded map with the union of boxes, at fixed thresholds and Otsu's;
- IoBB (ChestX-ray8, Wang et al. 2017): the largest connected region of the thresholded map, as a
  bounding box, intersected with the ground-truth box over that bounding box's area; T(IoBB) is the
  share of images with IoBB >= T.
Baselines are maps that know nothing: uniform noise, and a centred Gaussian (the centre prior).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.filters import threshold_otsu

from cxr.audit.inputs import AuditInputs
from cxr.audit.regions import patient_bootstrap
from cxr.data.labels import Box, box_mask
from cxr.explain.report import peak_location
from cxr.results.audit import Estimate, Localisation

THRESHOLDS = (0.25, 0.5)
IOBB_LEVELS = (0.1, 0.25, 0.5)


def pointing_hit(heatmap: np.ndarray, boxes: list[Box]) -> bool:
    """Is the (first) maximum of the map inside a box? An all-zero map never hits."""
    if heatmap.max() <= 0:
        return False
    x, y = peak_location(heatmap)
    return bool(box_mask(heatmap.shape, boxes)[y, x])


def iou(region: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(region, target).sum()
    return float(np.logical_and(region, target).sum() / union) if union else 0.0


def iobb(region: np.ndarray, target: np.ndarray) -> float:
    """Intersection of the largest region's bounding box with the target, over that bounding box's
    area. Regions are 8-connected; of equal largest ones, the first in raster order counts."""
    labels, count = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if not count:
        return 0.0
    # one count of every region's pixels: a noise map thresholded has thousands of specks, and
    # scikit-image's regionprops made an object for each (5.5 ms a map against 0.8)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    rows, columns = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    return float(target[top:bottom, left:right].sum() / ((bottom - top) * (right - left)))


def localisation_scores(heatmap: np.ndarray, boxes: list[Box]) -> dict[str, float]:
    """All scores for one map in [0, 1] at the stored image's size."""
    target = box_mask(heatmap.shape, boxes)
    scores: dict[str, float] = {"pointing_hit": float(pointing_hit(heatmap, boxes))}
    for t in THRESHOLDS:
        scores[f"iou@{t}"] = iou(heatmap >= t, target) if heatmap.max() > 0 else 0.0
    otsu = threshold_otsu(heatmap) if heatmap.max() > heatmap.min() else np.inf
    region = heatmap > otsu
    scores["iou@otsu"] = iou(region, target)
    value = iobb(region, target)
    scores["iobb"] = value
    for level in IOBB_LEVELS:
        scores[f"t(iobb)@{level}"] = float(value >= level)
    return scores


def baseline_maps(shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Maps that know nothing of the image: uniform noise, and a centred Gaussian (sigma = a quarter
    of the side)."""
    return {"random": rng.uniform(0, 1, shape), "centre": centre_map(tuple(shape))}


@cache
def centre_map(shape: tuple[int, int]) -> np.ndarray:
    """The centred Gaussian, peak 1, made once per size (read only: every image shares it)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    centre = np.exp(
        -(
            ((ys - (shape[0] - 1) / 2) / (shape[0] / 4)) ** 2
            + ((xs - (shape[1] - 1) / 2) / (shape[1] / 4)) ** 2
        )
        / 2
    )
    centre /= centre.max()
    centre.flags.writeable = False
    return centre


def with_baseline_maps(
    maps: dict[str, np.ndarray], count: int, shape: tuple[int, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The methods' (count, H, W) maps and, after them, a random and a centre map per image: the
    baselines every metric of the audit is read against."""
    drawn = [baseline_maps(shape, rng) for _ in range(count)]
    return dict(maps) | {name: np.stack([d[name] for d in drawn]) for name in ("random", "centre")}


def localisation_of(inputs: AuditInputs) -> pd.DataFrame:
    """The boxed images' scores, from the one pass over the fold (cxr.audit.sweep)."""
    return inputs.seen.localisation


def summarise_localisation(localisation: pd.DataFrame) -> dict[str, Localisation]:
    """Per method and baseline: each score's mean with a bootstrap 95% interval over patients (a
    patient's images rise and fall together; resampling images would narrow the interval)."""
    if not len(localisation):
        return {}
    scores = [
        c for c in localisation.columns if c not in ("image", "patient_id", "label", "method")
    ]
    return {
        str(method): Localisation(
            images=len(part),
            scores={
                score: Estimate(
                    float(part[score].mean()),
                    *patient_bootstrap(
                        part[score].to_numpy(dtype=float), part["patient_id"].astype(str).to_numpy()
                    ),
                )
                for score in scores
            },
        )
        for method, part in localisation.groupby("method", sort=False)
    }
