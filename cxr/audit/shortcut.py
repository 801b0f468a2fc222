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
from cxr.data.regions import BORDER
from cxr.results.audit import ClassShortcut, Shortcuts

DOMINATES = 0.5  # an image is flagged when more than this share of its map is outside
# a model is flagged when more than this share of the images predicted as some class are
MODEL_FLAG = 0.2


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


def summarise_shortcuts(rows: pd.DataFrame, method: str) -> Shortcuts:
    """Per predicted class and overall: mean share outside, share of flagged images, and the model's
    flag.

    When most images' lung fields are known, the flag is the region rule (cxr.audit.regions: peaks
    where no chest finding lies, energy outside the chest, each against a uniform map); else the
    border-band rule. A class is judged on its own: a shortcut usually serves one class (the marker
    says "positive"), so the share over all images would dilute it.
    """
    per_class = {
        str(name): ClassShortcut(
            images=len(part),
            mean_outside_share=float(part["outside_share"].mean()),
            flagged_share=float(part["flagged"].mean()),
        )
        for name, part in rows.groupby("predicted_class")
    }
    flagged = [name for name, c in per_class.items() if c.flagged_share > MODEL_FLAG]
    rule, regions = "border band", None
    if "peak_region" in rows and (rows["peak_region"].astype(str) != "").mean() >= 0.5:
        rule, regions = "regions", summarise_regions(rows)
        flagged = list(regions.flags)
    return Shortcuts(
        method=method,
        rule=rule,
        images=len(rows),
        mean_outside_share=float(rows["outside_share"].mean()),
        flagged_share=float(rows["flagged"].mean()),
        per_class=per_class,
        flagged_classes=flagged,
        regions=regions,
        implausible_lungs=int(rows["implausible_lungs"].sum())
        if "implausible_lungs" in rows
        else 0,
    )
