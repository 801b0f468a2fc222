"""Operating points of a binary task, chosen out of fold."""

from __future__ import annotations

import pandas as pd

from cxr import stats


def operating_points(
    predictions: pd.DataFrame, classes: list[str], positive: int | None, target: float
) -> dict:
    """A binary task's Youden and target-sensitivity thresholds chosen out of fold over several
    folds' predictions (cxr.stats.out_of_fold_operating_points); empty otherwise."""
    if positive is None or predictions["fold"].nunique() < 2:
        return {}
    truth = (predictions["true_label"] == classes[positive]).to_numpy()
    score = predictions[f"prob_{classes[positive]}"].to_numpy()
    return stats.out_of_fold_operating_points(truth, score, predictions["fold"].to_numpy(), target)
