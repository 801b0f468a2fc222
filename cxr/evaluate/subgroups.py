"""Metrics per subgroup (sex, age band, view, site...) from the dataset's own columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr import stats
from cxr.config import Config, EvaluateConfig
from cxr.data.labels import (
    patient_keys,
    read_labels,
)
from cxr.results.evaluation import Subgroup
from cxr.runs import EVALUATION_FILES
from cxr.tables import write_csv

SUBGROUP_COLUMNS = ("sex", "age", "view", "site", "source", "hospital")
AGE_BANDS = (0, 18, 40, 60, 80, 200)  # years: children, young, middle-aged, older, oldest


def with_subgroups(predictions: pd.DataFrame, dataset_dir: Path) -> pd.DataFrame:
    """The predictions with the dataset's subgroup columns (sex, age, view, site, ...) that
    labels.csv has; age as a band."""
    labels = read_labels(dataset_dir, check_files=False)
    columns = [c for c in SUBGROUP_COLUMNS if c in labels.columns]
    if not columns:
        return predictions
    found = labels[["image", *columns]].copy()
    if "age" in found:
        years = pd.to_numeric(found["age"], errors="coerce")
        bands = pd.cut(years, AGE_BANDS, right=False)
        found["age"] = ["" if pd.isna(b) else f"{int(b.left)}-{int(b.right) - 1}" for b in bands]
    return predictions.merge(found, on="image", how="left")


def subgroup_table(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int,
    settings: EvaluateConfig,
    seed: int = 0,
) -> pd.DataFrame:
    """ROC AUC with its interval (patients resampled) per value of each subgroup column, the
    counts, and whether the interval lies wholly below the AUC over all images."""
    predictions = predictions.reset_index(drop=True)
    truth = (predictions["true_label"] == classes[positive]).to_numpy()
    score = predictions[f"prob_{classes[positive]}"].to_numpy()
    overall = float(stats.weighted_auc(score, truth, np.ones((1, len(score))))[0])
    patients = patient_keys(predictions)
    rows = []
    for column in (c for c in SUBGROUP_COLUMNS if c in predictions.columns):
        for value, part in predictions.groupby(predictions[column].astype(str)):
            if not value:
                continue
            mine = part.index.to_numpy()
            auc = float(stats.weighted_auc(score[mine], truth[mine], np.ones((1, len(mine))))[0])
            low, high = (
                stats.auc_intervals(
                    truth[mine, None], score[mine, None], patients[mine], settings.bootstrap, seed
                )[0]
                if settings.bootstrap
                else (float("nan"), float("nan"))
            )
            rows.append(
                {
                    "column": column,
                    "value": value,
                    "images": len(mine),
                    "positives": int(truth[mine].sum()),
                    "roc_auc": auc,
                    "ci95_low": low,
                    "ci95_high": high,
                    "overall_auc": overall,
                    "below_overall": bool(high < overall),
                }
            )
    return pd.DataFrame(rows)


def subgroups_of(
    predictions: pd.DataFrame,
    dataset_dir: Path,
    classes: list[str],
    positive: int | None,
    cfg: Config,
    folder: Path,
) -> list[Subgroup]:
    """A binary task's subgroups (also written to subgroups.csv) when the dataset has subgroup
    columns; none otherwise."""
    if positive is None:
        return []
    found = with_subgroups(predictions, dataset_dir)
    table = subgroup_table(found, classes, positive, cfg.evaluate, cfg.experiment.seed)
    if table.empty:
        return []
    write_csv(table, folder / EVALUATION_FILES.subgroups)
    return [Subgroup(**row) for row in table.to_dict("records")]
