"""Shortcut audit: how much of each map lies where no chest finding can be.

The allowed region is the lung fields: the dataset's own (the synthetic generator records them),
else masks from cxr's lung-field model (`cxr lungs`, run by the audit when needed; implausible ones
are left out), otherwise the image without a border band (markers, text and tags sit at borders and
corners). A map whose energy lies mostly outside is flagged; a model is flagged when many of the
maps of one predicted class are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.audit.regions import summarise_regions
from cxr.data.labels import Box, box_mask

BORDER = 0.1  # the band's width, as a share of each side
DOMINATES = 0.5  # an image is flagged when more than this share of its map is outside
MODEL_FLAG = (
    0.2  # a model is flagged when more than this share of the images predicted as some class are
)


def allowed_region(shape: tuple[int, int], lungs: list[Box] | np.ndarray | None) -> np.ndarray:
    """The lung fields (boxes or a mask), or (unknown lungs) everything but the border band."""
    if isinstance(lungs, np.ndarray):
        return lungs
    if lungs:
        return box_mask(shape, lungs)
    region = np.zeros(shape, dtype=bool)
    dy, dx = round(BORDER * shape[0]), round(BORDER * shape[1])
    region[dy : shape[0] - dy, dx : shape[1] - dx] = True
    return region


def outside_share(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's total outside the allowed region (NaN for an empty map)."""
    total = float(heatmap.sum())
    return float(heatmap[~region].sum() / total) if total > 0 else float("nan")


def summarise_shortcuts(rows: pd.DataFrame) -> dict:
    """Per predicted class and overall: mean share outside, share of flagged images, and the model's
    flag.

    When most images' lung fields are known, the flag is the region rule (cxr.audit.regions: peaks
    where no chest finding lies, energy outside the chest, each against a uniform map); else the
    border-band rule.
    """
    summary: dict = {"per_class": {}}
    for name, part in rows.groupby("predicted_class"):
        summary["per_class"][str(name)] = {
            "images": len(part),
            "mean_outside_share": float(part["outside_share"].mean()),
            "flagged_share": float(part["flagged"].mean()),
        }
    summary["images"] = len(rows)
    summary["mean_outside_share"] = float(rows["outside_share"].mean())
    summary["flagged_share"] = float(rows["flagged"].mean())
    # per class: a shortcut usually serves one class (the marker says "positive"), so the overall
    # share dilutes it
    flagged = [name for name, c in summary["per_class"].items() if c["flagged_share"] > MODEL_FLAG]
    summary["rule"] = "border band"
    if "peak_region" in rows and (rows["peak_region"].astype(str) != "").mean() >= 0.5:
        summary["regions"] = summarise_regions(rows)
        summary["rule"] = "regions"
        flagged = list(summary["regions"]["flags"])
    summary["flagged_classes"] = flagged
    summary["model_flagged"] = bool(flagged)
    return summary
