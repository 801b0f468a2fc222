"""scikit-learn metrics of one set of predictions: per image, per patient, mean and std over
folds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from cxr.config import EvaluateConfig
from cxr.data.labels import known_patients
from cxr.data.pipeline import encode_labels
from cxr.evaluate.calibration import uncertainty
from cxr.results.evaluation import SCALAR_METRICS, Finding, Metrics, Scores, Spread


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], positive: int | None
) -> Metrics:
    """ROC AUC, accuracy, sensitivity, specificity, precision, F1 and the confusion matrix, from
    scikit-learn.

    Binary: for the positive class. More classes: one-vs-rest, macro-averaged.
    """
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    matrix = skm.confusion_matrix(y_true, y_pred, labels=labels)
    result: dict = {
        "n": len(y_true),
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "classes": classes,
    }
    if positive is not None:
        truth, guess = y_true == positive, y_pred == positive
        result["positive_class"] = classes[positive]
        result["roc_auc"] = (
            skm.roc_auc_score(truth, probs[:, positive])
            if 0 < truth.sum() < len(truth)
            else float("nan")
        )
        # undefined (NaN, null in JSON) rather than 0: no positives, no negatives, none called
        result["sensitivity"] = skm.recall_score(truth, guess, zero_division=np.nan)
        result["specificity"] = skm.recall_score(~truth, ~guess, zero_division=np.nan)
        result["precision"] = skm.precision_score(truth, guess, zero_division=np.nan)
        result["f1"] = skm.f1_score(truth, guess, zero_division=np.nan)
    else:
        present = np.unique(y_true)
        result["roc_auc"] = (
            skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
            if len(present) == len(labels)
            else float("nan")
        )
        result["sensitivity"] = skm.recall_score(
            y_true, y_pred, labels=labels, average="macro", zero_division=0
        )
        specificity = [
            (matrix.sum() - matrix[c].sum() - matrix[:, c].sum() + matrix[c, c])
            / max(matrix.sum() - matrix[c].sum(), 1)
            for c in labels
        ]
        result["specificity"] = float(np.mean(specificity))
        result["precision"] = skm.precision_score(
            y_true, y_pred, labels=labels, average="macro", zero_division=0
        )
        result["f1"] = skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    result["confusion_matrix"] = matrix.tolist()
    return Metrics(
        **{k: (float(v) if isinstance(v, np.floating | float) else v) for k, v in result.items()}
    )


def compute_multilabel_metrics(truth: np.ndarray, probs: np.ndarray, classes: list[str]) -> Metrics:
    """Per finding (threshold 0.5) and macro-averaged over findings that have both outcomes;
    accuracy is per label."""
    guess = probs >= 0.5
    per_class = {}
    for c, name in enumerate(classes):
        t, g = truth[:, c].astype(bool), guess[:, c]
        both = 0 < t.sum() < len(t)
        per_class[name] = Finding(
            n_positive=int(t.sum()),
            roc_auc=float(skm.roc_auc_score(t, probs[:, c])) if both else float("nan"),
            sensitivity=float(skm.recall_score(t, g, zero_division=0)) if t.any() else float("nan"),
            specificity=float(skm.recall_score(~t, ~g, zero_division=0))
            if (~t).any()
            else float("nan"),
            precision=float(skm.precision_score(t, g, zero_division=0)),
            f1=float(skm.f1_score(t, g, zero_division=0)),
        )
    averaged = {}
    for metric in ("roc_auc", "sensitivity", "specificity", "precision", "f1"):
        values = [getattr(v, metric) for v in per_class.values()]
        values = [v for v in values if not np.isnan(v)]
        averaged[metric] = float(np.mean(values)) if values else float("nan")
    return Metrics(
        n=len(truth),
        classes=classes,
        multi_label=True,
        **averaged,
        accuracy=float((guess == truth.astype(bool)).mean()),
        subset_accuracy=float((guess == truth.astype(bool)).all(axis=1).mean()),
        per_class=per_class,
        confusion_matrices={
            n: m.tolist()
            for n, m in zip(classes, skm.multilabel_confusion_matrix(truth, guess), strict=True)
        },
    )


def metrics_from_predictions(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int | None,
    multi_label: bool = False,
    settings: EvaluateConfig | None = None,
    seed: int = 0,
) -> Metrics:
    """The metrics of a table of predictions; with `settings`, also 95% intervals from a bootstrap
    over patients (`ci95`) and calibration (`calibration`)."""
    probs = predictions[[f"prob_{name}" for name in classes]].to_numpy()
    if multi_label:
        truth = encode_labels(predictions["true_label"], classes, multi_label=True)
        result = compute_multilabel_metrics(truth, probs, classes)
    else:
        truth = encode_labels(predictions["true_label"], classes)
        result = compute_metrics(truth, probs, classes, positive)
    if settings is not None:
        found = uncertainty(predictions, probs, truth, classes, positive, settings, seed)
        result = dataclasses.replace(result, **found)
    if positive is not None and (patients := patient_metrics(predictions, classes, positive)):
        result = dataclasses.replace(result, patients=patients)
    return result


def patient_metrics(
    predictions: pd.DataFrame, classes: list[str], positive: int
) -> dict[str, Scores] | None:
    """A binary task's metrics per patient, with the patient's score the max or the mean of their
    images' probabilities and the patient positive when any image is; None when no patient has
    more than one image (the image-level figures say it all)."""
    ids = known_patients(predictions["patient_id"])
    named = predictions.assign(patient=ids)[ids != ""]
    if named.empty or not named["patient"].duplicated().any():
        return None
    column = f"prob_{classes[positive]}"
    grouped = named.assign(case=named["true_label"] == classes[positive]).groupby("patient")
    truth = grouped["case"].any().to_numpy()
    result: dict[str, Scores] = {}
    for how in ("max", "mean"):
        score = grouped[column].agg(how).to_numpy()
        probs = np.zeros((len(score), len(classes)))
        probs[:, positive], probs[:, 1 - positive] = score, 1 - score
        index = np.where(truth, positive, 1 - positive)
        found = compute_metrics(index, probs, classes, positive)
        result[how] = Scores(n=found.n, **{k: getattr(found, k) for k in SCALAR_METRICS})
    return result


def mean_and_std(per_fold: dict[int, Metrics]) -> dict[str, Spread]:
    """Each scalar metric's mean and standard deviation over folds."""
    found = {
        m: np.array([getattr(f, m) for f in per_fold.values()], dtype=float) for m in SCALAR_METRICS
    }
    defined = {m: values[np.isfinite(values)] for m, values in found.items()}
    return {  # over the folds where the metric is defined; NaN (null) where it is nowhere
        m: Spread(
            mean=float(values.mean()) if len(values) else float("nan"),
            std=float(values.std()) if len(values) else float("nan"),
        )
        for m, values in defined.items()
    }
