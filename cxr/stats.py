"""Statistics a reviewer asks of a classifier: bootstrap intervals over patients, and calibration.

Images of one patient are not independent, so every interval resamples patients with replacement
and keeps all of a drawn patient's images (each resample is a weight per image: how many times
its patient was drawn). Metrics are computed for many resamples at once from those weights, in
chunks that keep resamples x images under BUDGET values, so a pooled NIH evaluation (112,120
images) needs tens of megabytes, not gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import rankdata

CONFIDENCE = 0.95
BUDGET = 4_000_000  # resamples x images held at once


def patient_resamples(
    patients: np.ndarray, rounds: int, seed: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(index of each image's patient, draws (n, patients): the patients each of n resamples
    takes), chunk by chunk; the same seed gives the same resamples whatever the chunking."""
    keys, index = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    rng = np.random.default_rng(seed)
    step = max(1, BUDGET // max(len(index), 1))
    for start in range(0, rounds, step):
        yield index, rng.integers(0, len(keys), size=(min(step, rounds - start), len(keys)))


def weights_of(index: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(n, images): how many times each image's patient is drawn in each resample."""
    counts = np.zeros(draws.shape)
    np.add.at(counts, (np.arange(len(draws))[:, None], draws), 1.0)
    return counts[:, index]


def patient_weights(patients: np.ndarray, rounds: int, seed: int = 0) -> np.ndarray:
    """(rounds, images): how many times each image's patient is drawn in each resample."""
    return np.concatenate([weights_of(i, d) for i, d in patient_resamples(patients, rounds, seed)])


def resampled_means(
    values: np.ndarray, patients: np.ndarray, rounds: int, seed: int = 0
) -> np.ndarray:
    """The mean of `values` in each resample of patients (from per-patient sums: no weights)."""
    means = []
    for index, draws in patient_resamples(patients, rounds, seed):
        size = draws.shape[1]
        sums = np.bincount(index, weights=values, minlength=size)
        counts = np.bincount(index, minlength=size)
        means.append(sums[draws].sum(axis=1) / counts[draws].sum(axis=1))
    return np.concatenate(means)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of `weights` (ties count one half), as on the data with each image
    repeated `weight` times; NaN where a row has no positive or no negative weight."""
    weights = np.atleast_2d(weights)
    order = np.argsort(scores, kind="stable")
    scores, positive, weights = scores[order], positive[order].astype(bool), weights[:, order]
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # groups of tied scores
    pos = np.add.reduceat(weights * positive, starts, axis=1)
    neg = np.add.reduceat(weights * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos * (below + neg / 2)).sum(axis=1) / total, np.nan)


def binary_metrics(
    truth: np.ndarray, score: np.ndarray, predicted: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The headline metrics of a binary test under each row of `weights`: ROC AUC from the
    scores, the others from the predictions (all positive-class)."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    weights = np.atleast_2d(weights)
    tp, fn = weights @ (truth & predicted), weights @ (truth & ~predicted)
    tn, fp = weights @ (~truth & ~predicted), weights @ (~truth & predicted)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = tp / (tp + fn)
        precision = tp / (tp + fp)
        return {
            "roc_auc": weighted_auc(score, truth, weights),
            "sensitivity": sensitivity,
            "specificity": tn / (tn + fp),
            "precision": precision,
            "f1": 2 * tp / (2 * tp + fp + fn),
            "accuracy": (tp + tn) / (tp + tn + fp + fn),
        }


def interval(values: np.ndarray) -> tuple[float, float]:
    """The central 95% of the resampled values (percentile bootstrap), ignoring undefined ones."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - CONFIDENCE) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def binary_intervals(
    truth: np.ndarray,
    score: np.ndarray,
    predicted: np.ndarray,
    patients: np.ndarray,
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% intervals of every headline metric, resampling patients."""
    chunks = [
        binary_metrics(truth, score, predicted, weights_of(index, draws))
        for index, draws in patient_resamples(patients, rounds, seed)
    ]
    return {k: interval(np.concatenate([c[k] for c in chunks])) for k in chunks[0]}


def auc_intervals(
    truth: np.ndarray, scores: np.ndarray, patients: np.ndarray, rounds: int = 2000, seed: int = 0
) -> list[tuple[float, float]]:
    """95% intervals of each column's ROC AUC (one finding per column), resampling patients; one
    set of resamples serves every column."""
    per_column: list[list[np.ndarray]] = [[] for _ in range(truth.shape[1])]
    for index, draws in patient_resamples(patients, rounds, seed):
        weights = weights_of(index, draws)
        for c, found in enumerate(per_column):
            found.append(weighted_auc(scores[:, c], truth[:, c], weights))
    return [interval(np.concatenate(found)) for found in per_column]


def equal_count_bins(probability: np.ndarray, bins: int) -> list[np.ndarray]:
    """Indices of the images in `bins` groups of (nearly) equal size, by increasing probability."""
    order = np.argsort(probability, kind="stable")
    return [part for part in np.array_split(order, min(bins, len(order))) if len(part)]


def calibration(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error over equal-count bins (the share-weighted gap between mean
    predicted probability and observed frequency), the Brier score, and the bins themselves."""
    probability, outcome = np.asarray(probability, float), np.asarray(outcome, float)
    groups = equal_count_bins(probability, bins)
    predicted = [float(probability[g].mean()) for g in groups]
    observed = [float(outcome[g].mean()) for g in groups]
    sizes = [len(g) for g in groups]
    ece = sum(n * abs(p - o) for n, p, o in zip(sizes, predicted, observed, strict=True))
    return {
        "ece": float(ece / len(probability)),
        "brier": float(np.mean((probability - outcome) ** 2)),
        "bins": len(groups),
        "mean_predicted": predicted,
        "observed": observed,
        "counts": sizes,
    }


def youden_threshold(truth: np.ndarray, score: np.ndarray) -> float:
    """The score threshold that maximises sensitivity + specificity - 1 (Youden's J)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(truth, score)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def sensitivity_threshold(truth: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest score threshold whose sensitivity reaches `target` (so the best specificity
    among those that do)."""
    from sklearn.metrics import roc_curve

    _, tpr, thresholds = roc_curve(truth, score, drop_intermediate=False)
    return float(thresholds[int(np.argmax(tpr >= target))])


def at_threshold(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Sensitivity and specificity of positive calls against the truth (NaN without cases)."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    cases, controls = truth.sum(), (~truth).sum()
    return {
        "sensitivity": float((truth & predicted).sum() / cases) if cases else float("nan"),
        "specificity": float((~truth & ~predicted).sum() / controls) if controls else float("nan"),
    }


def out_of_fold_operating_points(
    truth: np.ndarray, score: np.ndarray, folds: np.ndarray, target: float
) -> dict:
    """Thresholds at the Youden point and at a target sensitivity, each chosen for a fold on the
    other folds' predictions only (never on the images it is applied to), and the sensitivity
    and specificity they give over all folds."""
    truth, folds = truth.astype(bool), np.asarray(folds)
    result: dict = {}
    for name, choose in (
        ("youden", youden_threshold),
        (f"sensitivity_{target:g}", lambda t, s: sensitivity_threshold(t, s, target)),
    ):
        thresholds, called = {}, np.zeros(len(truth), dtype=bool)
        for fold in np.unique(folds):
            mine, others = folds == fold, folds != fold
            if truth[others].all() or not truth[others].any():
                return {}  # another fold set without both classes: no threshold can be chosen
            thresholds[str(fold)] = choose(truth[others], score[others])
            called[mine] = score[mine] >= thresholds[str(fold)]
        result[name] = {"thresholds": thresholds, **at_threshold(truth, called)}
    result["0.5"] = at_threshold(truth, score >= 0.5)
    return result


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities, kept finite: softmax(log p / T) is temperature scaling of the logits
    (the logits' per-image constant cancels)."""
    return np.log(np.clip(probs, 1e-12, 1.0))


def scaled_probabilities(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    exp = np.exp(z)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, truth: np.ndarray) -> float:
    """Mean -log p(true class)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, truth: np.ndarray) -> float:
    """The temperature (0.05 to 20) that minimises the negative log-likelihood of `truth`."""
    from scipy.optimize import minimize_scalar

    log_probs = log_probabilities(probs)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(
            scaled_probabilities(log_probs, float(np.exp(log_t))), truth
        ),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(found.x))


def cross_fitted_temperature(
    probs: np.ndarray, truth: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """Each fold's probabilities rescaled by a temperature fitted on the other folds only (never
    on the images it is applied to); returns them and the temperature per fold."""
    folds = np.asarray(folds)
    calibrated, temperatures = np.empty_like(probs, dtype=float), {}
    for fold in np.unique(folds):
        mine = folds == fold
        temperatures[str(fold)] = fit_temperature(probs[~mine], truth[~mine])
        calibrated[mine] = scaled_probabilities(
            log_probabilities(probs[mine]), temperatures[str(fold)]
        )
    return calibrated, temperatures


def ranked(heatmap: np.ndarray) -> np.ndarray | None:
    """A map's pixel ranks (ties averaged), centred and scaled to unit norm; None when constant
    (Spearman's rho is undefined there, and counts as 0)."""
    if np.ptp(heatmap) == 0:
        return None
    ranks = rankdata(heatmap.ravel())
    ranks -= ranks.mean()
    return ranks / np.linalg.norm(ranks)


def ranked_correlation(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Spearman's rho from two `ranked` maps: a map is ranked once, however often it is compared."""
    return 0.0 if a is None or b is None else float(a @ b)
