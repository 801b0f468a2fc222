"""Typed results read back from the JSON a command wrote (cxr.results.records): hand-written
files, the values they must give."""

import json
import math
from pathlib import Path

import pytest

from cxr.findings import read_record, record_of
from cxr.results.evaluation import Evaluation, Metrics
from cxr.results.explanation import ExplainSummary
from cxr.results.records import from_json, to_json

POOLED = {
    "n": 4,
    "accuracy": 0.75,
    "classes": ["normal", "tb"],
    "positive_class": "tb",
    "roc_auc": None,  # undefined: written as null
    "sensitivity": 0.5,
    "specificity": 1.0,
    "precision": 1.0,
    "f1": 0.6666666666666666,
    "confusion_matrix": [[2, 0], [1, 1]],
    "ci95": {"sensitivity": [0.0, 1.0]},
    "operating_points": {
        "youden": {"thresholds": {"0": 0.4, "1": 0.6}, "sensitivity": 1.0, "specificity": 0.5},
        "0.5": {"sensitivity": 0.5, "specificity": 1.0},
    },
}


def test_a_metrics_file_reads_into_typed_fields() -> None:
    """null is NaN again, JSON's string keys of per_fold are the fold numbers, intervals are
    pairs, a missing optional part is empty, and writing it again gives the same text."""
    report = {
        "folds": [0, 1],
        "pooled": POOLED,
        "mean_std": {"roc_auc": {"mean": 0.8, "std": None}},
        "per_fold": {"0": POOLED, "1": POOLED},
    }
    found = from_json(Evaluation, json.loads(json.dumps(report)))
    assert math.isnan(found.pooled.roc_auc) and found.pooled.sensitivity == 0.5
    assert set(found.per_fold) == {0, 1} and found.per_fold[1].n == 4
    assert found.pooled.ci95["sensitivity"] == (0.0, 1.0)
    assert found.pooled.operating_points["youden"].thresholds == {"0": 0.4, "1": 0.6}
    assert found.pooled.operating_points["0.5"].thresholds == {}
    assert found.pooled.calibration is None and found.pooled.subgroups == []
    assert math.isnan(found.mean_std["roc_auc"].std)
    again = json.loads(json.dumps(to_json(found), allow_nan=True).replace("NaN", "null"))
    assert again == report  # the optional parts it lacked are still left out


def test_optional_fields_are_left_out_while_empty() -> None:
    headline = ["roc_auc", "sensitivity", "specificity", "precision", "f1"]
    metrics = Metrics(n=2, accuracy=1.0, classes=["a", "b", "c"], **dict.fromkeys(headline, 1.0))
    assert list(to_json(metrics)) == ["n", "accuracy", "classes", *headline]


def test_a_damaged_or_foreign_file_is_named(tmp_path: Path, caplog) -> None:
    """The card leaves an unreadable summary out with a warning naming it; a reader that needs it
    gets a ValueError naming the file."""
    path = tmp_path / "summary.json"
    path.write_text('{"images": 3}')  # an explain summary missing its counts
    with pytest.raises(ValueError, match=r"summary\.json cannot be read as ExplainSummary"):
        record_of(ExplainSummary, path)
    assert read_record(ExplainSummary, path) is None
    assert "summary.json cannot be read as ExplainSummary" in caplog.text
    assert read_record(ExplainSummary, tmp_path / "missing.json") is None
    path.write_text("{")
    assert read_record(ExplainSummary, path) is None


def test_a_cut_audit_summary_leaves_the_review_page_without_verdicts(tmp_path: Path) -> None:
    """explain rewrites the fold's review page with the last audit's verdicts: a summary.json cut
    by a full disk or a kill was a JSON traceback there; now the page has no verdicts, and the
    summary is named in a warning."""
    from cxr.explain.review import read_audit_verdicts

    (tmp_path / "shortcuts.csv").write_text("image,outside_share\nimages/a.png,0.1\n")
    (tmp_path / "summary.json").write_text('{"fold": 0, "folds": [0], "lay')
    assert read_audit_verdicts(tmp_path) is None
