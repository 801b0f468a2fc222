"""Patient-grouped, label-stratified cross-validation folds (scikit-learn's
StratifiedGroupKFold)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from cxr.data.labels import known_patients, split_labels
from cxr.errors import DataError


def compute_patient_keys(table: pd.DataFrame) -> pd.Series:
    """The grouping key: patient_id, or the image itself when the patient is unknown."""
    patient = known_patients(table["patient_id"])
    return patient.where(patient != "", "image:" + table["image"].astype(str))


def compute_strata(labels: pd.Series, multi_label: bool) -> pd.Series:
    """Single-label: the label. Multi-label: each image's rarest finding, so rare findings spread
    over folds."""
    if not multi_label:
        return labels.astype(str)
    counts = Counter(name for label in labels for name in split_labels(label))
    return labels.map(lambda label: min(split_labels(label), key=lambda name: (counts[name], name)))


def check_class_counts(labels: pd.Series, k: int, multi_label: bool) -> None:
    """Every class needs at least k images, or some fold would have none of it."""
    names = (
        (name for label in labels for name in split_labels(label))
        if multi_label
        else labels.astype(str)
    )
    counts = Counter(names)
    too_few = {name: n for name, n in sorted(counts.items()) if n < k}
    if too_few:
        listed = ", ".join(f"{name} ({n})" for name, n in too_few.items())
        raise DataError(
            f"too few images for {k} folds: {listed}; each class needs at least {k} (use fewer "
            "folds)"
        )


def assign_folds(
    table: pd.DataFrame, k: int = 10, seed: int = 0, multi_label: bool = False
) -> np.ndarray:
    """Fold number (0..k-1) for each row; no patient spans two folds; reproducible from `seed`."""
    if k < 2:
        raise DataError(f"folds must be at least 2, got {k}")
    if table.empty:
        raise DataError("the dataset has no images")
    check_class_counts(table["label"], k, multi_label)
    groups = compute_patient_keys(table)
    if groups.nunique() < k:
        raise DataError(
            f"only {groups.nunique()} patients for {k} folds; each fold needs at least one patient"
        )
    strata = compute_strata(table["label"], multi_label)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.full(len(table), -1, dtype=int)
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(table)), strata, groups)):
        folds[val_index] = fold
    return folds
