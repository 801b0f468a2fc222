"""Folds on hand-made tables: patients never span folds, labels are stratified, errors are clear."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr.data.folds import assign_folds
from cxr.errors import DataError


def make_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for i in range(int(rng.integers(1, 4))):
            rows.append(
                {
                    "image": f"images/p{p}_{i}.png",
                    "label": "pos" if rng.random() < 0.3 else "neg",
                    "patient_id": f"p{p}",
                }
            )
    return pd.DataFrame(rows)


def test_no_patient_in_two_folds() -> None:
    table = make_table()
    table["fold"] = assign_folds(table, k=5, seed=1)
    assert table.groupby("patient_id")["fold"].nunique().max() == 1
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]


def test_labels_are_stratified() -> None:
    table = make_table(n_patients=200)
    table["fold"] = assign_folds(table, k=5, seed=1)
    overall = (table["label"] == "pos").mean()
    per_fold = table.groupby("fold")["label"].apply(lambda s: (s == "pos").mean())
    assert (per_fold - overall).abs().max() < 0.05, per_fold.to_dict()


def test_reproducible_from_seed() -> None:
    table = make_table()
    assert (assign_folds(table, 5, seed=7) == assign_folds(table, 5, seed=7)).all()
    assert (assign_folds(table, 5, seed=7) != assign_folds(table, 5, seed=8)).any()


def test_image_without_patient_is_its_own_patient() -> None:
    table = pd.DataFrame(
        {
            "image": [f"i{i}.png" for i in range(20)],
            "label": ["a", "b"] * 10,
            "patient_id": [""] * 20,
        }
    )
    folds = assign_folds(table, k=4, seed=0)
    assert np.bincount(folds).tolist() == [5, 5, 5, 5]  # 20 singleton groups spread evenly


def test_multi_label_stratifies_rare_findings() -> None:
    labels = ["A"] * 40 + ["A|B"] * 10 + ["C"] * 30
    table = pd.DataFrame(
        {
            "image": [f"i{i}" for i in range(80)],
            "label": labels,
            "patient_id": [f"p{i}" for i in range(80)],
        }
    )
    table["fold"] = assign_folds(table, k=5, seed=0, multi_label=True)
    per_fold_b = table[table["label"].str.contains("B")].groupby("fold").size()
    assert per_fold_b.tolist() == [2, 2, 2, 2, 2]


def test_too_few_images_of_a_class() -> None:
    table = pd.DataFrame(
        {
            "image": [f"i{i}" for i in range(23)],
            "label": ["a"] * 20 + ["b"] * 3,
            "patient_id": [""] * 23,
        }
    )
    with pytest.raises(
        DataError, match=r"too few images for 5 folds: b \(3\); each class needs at least 5"
    ):
        assign_folds(table, k=5)


def test_empty_table() -> None:
    with pytest.raises(DataError, match="no images"):
        assign_folds(pd.DataFrame(columns=["image", "label", "patient_id"]), k=5)
