"""evaluate(cfg, folds): out-of-fold predictions, scikit-learn metrics and plots, per fold and
pooled; evaluate_external for another dataset.

run.py opens the folds, predicts and writes the report; metrics.py, calibration.py,
subgroups.py and operating.py compute what it holds.
"""

from cxr.evaluate.metrics import compute_metrics, compute_multilabel_metrics, patient_metrics
from cxr.evaluate.run import evaluate, evaluate_external
from cxr.evaluate.subgroups import subgroup_table, with_subgroups

__all__ = [
    "compute_metrics",
    "compute_multilabel_metrics",
    "evaluate",
    "evaluate_external",
    "patient_metrics",
    "subgroup_table",
    "with_subgroups",
]
