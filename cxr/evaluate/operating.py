"""Operating points of a binary task, chosen out of fold."""

from __future__ import annotations

import pandas as pd

from cxr import stats
from cxr.results.evaluation import OperatingPoint


def operating_points(
    predictions: pd.DataFrame, classes: list[str], positive: int | None, target: float
) -> dict[str, OperatingPoint]:
    """A binary task's Youden and target-sensitivity thresholds chosen out of fold over several
    folds' predictions (cxr.stats.out_of_fold_operating_points); empty otherwise."""
    if positive is None or predictions["fold"].nunique() < 2:
        return {}
    truth = (predictions["true_label"] == classes[positive]).to_numpy()
    score = predictions[f"prob_{classes[positive]}"].to_numpy()
    found = stats.out_of_fold_operating_points(truth, score, predictions["fold"].to_numpy(), target)
    return {name: OperatingPoint(**point) for name, point in found.items()}
