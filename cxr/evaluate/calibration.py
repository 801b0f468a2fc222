"""Calibration: intervals over patients, the reliability diagram, temperature scaling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxr import stats
from cxr.config import EvaluateConfig
from cxr.data.labels import (
    patient_keys,
)
from cxr.data.pipeline import encode_labels
from cxr.figures import plt, save_figure
from cxr.results.evaluation import Calibration, Fit, Temperature
from cxr.runs import EVALUATION_FILES

log = logging.getLogger(__name__)


def temperature_scaling(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int | None,
    multi_label: bool,
    bins: int = 10,
) -> Temperature | None:
    """Calibration before and after temperature scaling cross-fitted over folds (each fold's
    temperature fitted on the other folds' predictions); adds calibrated_prob_<class> columns.
    None, with a warning, where it cannot be done honestly."""
    if multi_label or predictions["fold"].nunique() < 2:
        log.warning(
            "evaluate.calibrate: temperature needs a single-label task and two or more evaluated "
            "folds (each fold's temperature is fitted on the others); not done"
        )
        return None
    probs = predictions[[f"prob_{name}" for name in classes]].to_numpy()
    truth = encode_labels(predictions["true_label"], classes)
    calibrated, temperatures = stats.cross_fitted_temperature(
        probs, truth, predictions["fold"].to_numpy()
    )
    for i, name in enumerate(classes):
        predictions[f"calibrated_prob_{name}"] = calibrated[:, i]

    def judged(p: np.ndarray) -> Fit:
        probability, happened, _ = calibration_subject(p, truth, classes, positive)
        found = stats.calibration(probability, happened, bins)
        return Fit(
            ece=found["ece"], brier=found["brier"], nll=stats.negative_log_likelihood(p, truth)
        )

    return Temperature(per_fold=temperatures, before=judged(probs), after=judged(calibrated))


def uncertainty(
    predictions: pd.DataFrame,
    probs: np.ndarray,
    truth: np.ndarray,
    classes: list[str],
    positive: int | None,
    settings: EvaluateConfig,
    seed: int,
) -> dict:
    """Intervals (patients resampled) and calibration of one set of predictions: for a binary
    task every headline metric and the positive class's probability; for multi-label data each
    finding's AUC and every finding's probability; otherwise accuracy and the top-label
    confidence."""
    patients = patient_keys(predictions)
    rounds, bins = settings.bootstrap, settings.calibration_bins
    out: dict = {}
    if truth.ndim == 2:  # multi-label
        if rounds:
            out["ci95"] = {
                f"roc_auc_{name}": bounds
                for name, bounds in zip(
                    classes, stats.auc_intervals(truth, probs, patients, rounds, seed), strict=True
                )
            }
        out["calibration"] = Calibration(
            **stats.calibration(probs.ravel(), truth.ravel(), bins),
            of="every finding's probability",
        )
        return out
    probability, happened, subject = calibration_subject(probs, truth, classes, positive)
    out["calibration"] = Calibration(**stats.calibration(probability, happened, bins), of=subject)
    if rounds and positive is not None:
        said = probs.argmax(axis=1) == positive
        out["ci95"] = stats.binary_intervals(happened, probability, said, patients, rounds, seed)
    elif rounds:
        accuracy = stats.resampled_means(happened.astype(float), patients, rounds, seed)
        out["ci95"] = {"accuracy": stats.interval(accuracy)}
    return out


def calibration_subject(
    probs: np.ndarray, truth: np.ndarray, classes: list[str], positive: int | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """What a single-label task's calibration judges: the positive class's probability against
    the truth (binary), else the predicted class's probability against being right."""
    if positive is not None:
        return probs[:, positive], truth == positive, f"P({classes[positive]})"
    return probs.max(axis=1), probs.argmax(axis=1) == truth, "the predicted class's probability"


def plot_calibration(folder: Path, found: Calibration) -> None:
    """calibration.png: the reliability diagram (mean predicted probability against the observed
    frequency, per equal-count bin), with the bins' sizes."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    top.plot(found.mean_predicted, found.observed, "o-", label="model")
    top.set(
        ylabel="observed frequency",
        title=f"{found.of}: ECE {found.ece:.3f}, Brier {found.brier:.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(found.mean_predicted, found.counts, width=0.02)
    bottom.set(xlabel="mean predicted probability (equal-count bins)", ylabel="images")
    save_figure(fig, folder / EVALUATION_FILES.calibration)
