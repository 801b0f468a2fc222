"""CLAIM.md follows the run's files: counted here from split.csv and metrics.json, and an edited
file is what the checklist says next time."""

from __future__ import annotations

import json

import keras
import pandas as pd

from cxr.documents import write_documents
from cxr.evaluate import evaluate
from cxr.runs import experiment_dir, fold_run, pooled_evaluation_dir


def rows_of(text: str) -> dict[int, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| ") and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_the_checklist_is_filled_from_the_run(trained_run) -> None:
    evaluate(trained_run, [0, 1])
    write_documents(trained_run)
    path = experiment_dir(trained_run) / "CLAIM.md"
    rows = rows_of(path.read_text())
    assert sorted(rows) == list(range(1, 43))  # every item of the 2020 numbering, once
    for item in (1, 2, 12, 16, 40, 42):  # only the author can say
        assert rows[item][3] == "for the author" and rows[item][4] == ""
    # partitions: counts and the patient-level check, from each fold's split.csv
    for fold in (0, 1):
        split = pd.read_csv(fold_run(trained_run, fold).split, dtype=str)
        train, val = split[split["split"] == "train"], split[split["split"] == "validation"]
        assert f"fold {fold}: {len(train)} training, {len(val)} validation" in rows[20][3]
        assert not set(train["patient_id"]) & set(val["patient_id"])
    assert "(checked: 0 shared)" in rows[21][3]
    provenance = json.loads(fold_run(trained_run, 0).provenance.read_text())
    assert f"Keras {keras.__version__}" in rows[23][3] and provenance["keras"] == keras.__version__
    # a figure changed in metrics.json is what the checklist says next time
    metrics_path = pooled_evaluation_dir(trained_run) / "metrics.json"
    report = json.loads(metrics_path.read_text())
    report["per_fold"]["1"]["roc_auc"] = 0.321
    report["pooled"]["specificity"] = 0.654
    metrics_path.write_text(json.dumps(report))
    write_documents(trained_run)
    rows = rows_of(path.read_text())
    assert "fold 1: roc_auc 0.321" in rows[35][3]
    assert "specificity 0.654" in rows[36][3]
    assert rows[35][4] == "`evaluation/metrics.json`"
    evaluate(trained_run, [0, 1])  # as the other tests found it
