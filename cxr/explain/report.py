"""Per-image report rows and the per-fold summary, including how well maps localise known
findings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.data.labels import Box, box_mask
from cxr.results.explanation import MapLocalisation

LOCALISATION_SEED = 0


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> probabilities: softmax, or [1 - sigmoid, sigmoid] for a single-logit
    head."""
    if logits.shape[-1] == 1:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predicted_classes(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> each image's predicted class: the largest logit (the first of a tie), or
    for a single-logit head class 1 when its logit is above 0. The rule of the maps' 'predicted'
    target (cxr.explain.methods.resolve_targets, a test keeps the two in step), read from the
    logits because probabilities can tie where the logits do not."""
    if logits.shape[-1] == 1:
        return (logits[:, 0] > 0).astype(int)
    return logits.argmax(axis=-1)


def output_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """(N, C) logits -> probabilities: one sigmoid per finding for multi-label models, else
    `class_probabilities`."""
    return 1 / (1 + np.exp(-logits)) if multi_label else class_probabilities(logits)


def peak_location(heatmap: np.ndarray) -> tuple[int, int]:
    """(x, y) of the map's maximum, in pixels of the map."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(x), int(y)


def inside(x: float, y: float, boxes: list[Box]) -> bool:
    """Is the pixel (x, y) inside any box (pixel centres, the box's own pixels)?"""
    return any(b.x <= x < b.x + b.w and b.y <= y < b.y + b.h for b in boxes)


def inside_any(xs: np.ndarray, ys: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """`inside` for arrays of pixels at once (the random baseline draws 100 per image)."""
    hits = np.zeros(np.shape(xs), dtype=bool)
    for b in boxes:
        hits |= (b.x <= xs) & (xs < b.x + b.w) & (b.y <= ys) & (ys < b.y + b.h)
    return hits


def box_energy_share(heatmap: np.ndarray, boxes: list[Box]) -> float:
    """Share of the map's total inside the boxes (NaN without boxes or for an empty map)."""
    total = float(heatmap.sum())
    if not boxes or total <= 0:
        return float("nan")
    return float(heatmap[box_mask(heatmap.shape, boxes)].sum() / total)


def outside_share(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's total outside a boolean region (NaN for an empty map)."""
    total = float(heatmap.sum())
    return float(heatmap[~region].sum() / total) if total > 0 else float("nan")


def outcome(true_index: int, predicted_index: int, positive: int | None) -> str:
    """TP / FP / TN / FN for a binary task; empty otherwise."""
    if positive is None:
        return ""
    truth, guess = true_index == positive, predicted_index == positive
    return {(True, True): "TP", (False, True): "FP", (False, False): "TN", (True, False): "FN"}[
        (truth, guess)
    ]


def summarise_fold(report: pd.DataFrame) -> dict:
    """Counts, empty maps, and localisation for true positives with boxes against two baselines
    (the fields of cxr.results.explanation.ExplainSummary that the report gives).

    Baselines: a map that always peaks at the image centre, and one that peaks at a uniformly
    random pixel (mean over 100 draws per image, fixed seed).
    """
    summary: dict = {
        "images": int(report["image"].nunique()) if len(report) else 0,
        "rows": len(report),  # more than images when several classes are explained per image
        "right": int((report["correct"] == "right").sum()),
        "wrong": int((report["correct"] == "wrong").sum()),
        "empty_maps": int(report["empty"].sum()),
    }
    if "outcome" in report and report["outcome"].astype(bool).any():
        summary["outcomes"] = {
            k: int(v) for k, v in report["outcome"].value_counts().sort_index().items() if k
        }
    located = (
        report[(report["outcome"] == "TP") & (report["boxes"].map(len) > 0)]
        if "outcome" in report
        else report.iloc[:0]
    )
    if len(located):
        rng = np.random.default_rng(LOCALISATION_SEED)
        centre, random_hits = [], []
        for row in located.itertuples():
            centre.append(inside((row.width - 1) / 2, (row.height - 1) / 2, row.boxes))
            xs, ys = rng.integers(0, row.width, 100), rng.integers(0, row.height, 100)
            random_hits.append(np.mean(inside_any(xs, ys, row.boxes)))
        summary["localisation"] = MapLocalisation(
            true_positives_with_boxes=len(located),
            peak_in_box=float(located["peak_in_box"].mean()),
            centre_baseline=float(np.mean(centre)),
            random_baseline=float(np.mean(random_hits)),
            mean_box_energy_share=float(located["box_energy_share"].mean()),
        )
    return summary
