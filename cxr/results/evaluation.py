"""What `cxr evaluate` returns and writes to metrics.json: the metrics of one set of
predictions (a fold's, the pooled out-of-fold ones, an external ensemble's) and the report over
folds, as typed records (cxr.results.records for the JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cxr.results.records import NOT_SAVED, optional

SCALAR_METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


@dataclass(frozen=True)
class Calibration:
    """A reliability diagram's figures: expected calibration error over equal-count bins, the
    Brier score, and each bin's mean prediction, observed frequency and size."""

    ece: float
    brier: float
    bins: int
    mean_predicted: list[float]
    observed: list[float]
    counts: list[int]
    of: str = ""  # what is judged: P(class), the predicted class's probability, ...


@dataclass(frozen=True)
class Scores:
    """The headline figures of one set of predictions, without intervals (per patient, per
    finding)."""

    n: int
    roc_auc: float
    accuracy: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float


@dataclass(frozen=True)
class Finding:
    """One finding of a multi-label task, at threshold 0.5."""

    n_positive: int
    roc_auc: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float


@dataclass(frozen=True, kw_only=True)
class OperatingPoint:
    """A threshold rule and what it gives over all folds; each fold's threshold chosen on the
    others (none for the fixed 0.5)."""

    thresholds: dict[str, float] = optional({})
    sensitivity: float
    specificity: float


@dataclass(frozen=True)
class Fit:
    ece: float
    brier: float
    nll: float


@dataclass(frozen=True)
class Temperature:
    """Temperature scaling cross-fitted over folds: each fold's temperature, the calibration
    before and after."""

    per_fold: dict[str, float]
    before: Fit
    after: Fit


@dataclass(frozen=True)
class Subgroup:
    """ROC AUC of one subgroup (a value of sex, age band, view, site...), its interval over
    patients, and whether the interval lies wholly below the AUC over all images."""

    column: str
    value: str
    images: int
    positives: int
    roc_auc: float
    ci95_low: float
    ci95_high: float
    overall_auc: float
    below_overall: bool


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """The metrics of one set of predictions. Binary tasks: of the positive class; more classes:
    one-vs-rest, macro-averaged; multi-label: per finding and macro-averaged over findings that
    have both outcomes (accuracy per label)."""

    n: int
    accuracy: float
    classes: list[str]
    positive_class: str | None = optional()
    roc_auc: float
    sensitivity: float
    specificity: float
    precision: float
    f1: float
    confusion_matrix: list[list[int]] = optional([])  # rows true, columns predicted
    multi_label: bool = optional(False)
    subset_accuracy: float | None = optional()
    per_class: dict[str, Finding] = optional({})
    confusion_matrices: dict[str, list[list[int]]] = optional({})
    calibration: Calibration | None = optional()
    ci95: dict[str, tuple[float, float]] = optional({})  # 95% intervals, patients resampled
    patients: dict[str, Scores] = optional({})  # "max", "mean" of a patient's images
    operating_points: dict[str, OperatingPoint] = optional({})  # pooled out of fold only
    temperature: Temperature | None = optional()
    subgroups: list[Subgroup] = optional([])


@dataclass(frozen=True)
class Spread:
    """A metric's mean and standard deviation over folds (NaN where no fold defines it)."""

    mean: float
    std: float


@dataclass(frozen=True)
class Evaluation:
    """`cxr evaluate`: each fold's metrics and the pooled out-of-fold ones (metrics.json of
    runs/<experiment>/evaluation/)."""

    folds: list[int]
    pooled: Metrics
    mean_std: dict[str, Spread]
    per_fold: dict[int, Metrics]
    folder: Path = dataclasses.field(default=Path(), metadata=NOT_SAVED)


@dataclass(frozen=True)
class ExternalEvaluation:
    """`cxr evaluate --on DATASET`: every fold's model and their ensemble (the mean probability)
    on another dataset (metrics.json of runs/<experiment>/external/<dataset>/)."""

    dataset: str
    dataset_dir: str
    renamed: dict[str, str]
    folds: list[int]
    ensemble: Metrics
    mean_std: dict[str, Spread]
    per_fold: dict[int, Metrics]
    folder: Path = dataclasses.field(default=Path(), metadata=NOT_SAVED)
