"""cxr compare RUN_A RUN_B: did the fix work? Two runs on the same images, compared pairwise.

Two independent intervals that overlap say little when both runs scored the same films: their
errors are correlated. So every difference B - A is computed on the images both runs predicted
(their own pooled out-of-fold predictions, or both on one --on dataset), with a **paired**
bootstrap: each resample draws patients once and scores both runs on them. The ROC AUC difference
also gets DeLong's test for two correlated AUCs (DeLong et al. 1988, in the fast form of Sun & Xu
2014). Where the maps look comes from both runs' audits. Writes <runs>/compare/<A>-vs-<B>/.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from cxr import stats
from cxr.atomic import write_json_atomic
from cxr.data.labels import known_patients
from cxr.data.sources import check_dataset_name
from cxr.errors import DataError
from cxr.figures import plt, save_figure
from cxr.findings import read_record, record_of
from cxr.results.audit import AuditSummary
from cxr.results.evaluation import Evaluation, ExternalEvaluation
from cxr.runs import AUDIT_FILES, COMPARE_FILES, EVALUATION_FILES
from cxr.tables import read_csv, write_csv

ROUNDS = 2000
METRICS = ("roc_auc", "sensitivity", "specificity", "brier")


@dataclass(frozen=True)
class Difference:
    metric: str
    a: float
    b: float
    difference: float  # b - a
    low: float  # paired 95% interval of the difference
    high: float
    p_value: float | None = None  # DeLong's, for the ROC AUC


@dataclass(frozen=True)
class WhereMapsLook:
    """What a run's audit says of where its maps look, per predicted class."""

    audit: str  # the summary.json it comes from, below the run's folder
    peaks_in_lungs: dict[str, float]  # share of map peaks inside the lungs
    energy_outside_chest: dict[str, float]
    flagged_by_maps: list[str]
    flagged_on_evidence: dict[str, list[str]]


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    on: str | None
    images: int
    patients: int
    positive_class: str
    differences: list[Difference]
    maps: dict[str, WhereMapsLook | None]  # run -> where its maps look (None: never audited)
    folder: Path


def delong(truth: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> tuple[float, float]:
    """DeLong's test of two correlated ROC AUCs on the same images: (z, two-sided p).

    Structural components (Sun & Xu 2014): for each positive, the share of negatives it outranks
    (ties one half), and for each negative the share of positives that outrank it; their
    covariance over the two scores gives the variance of AUC_b - AUC_a.
    """
    positive = truth.astype(bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan")
    v10, v01 = [], []
    for score in (score_a, score_b):
        x, y = score[positive], score[~positive]
        # ranks within each group and together give the placements without an m x n matrix
        together = rankdata(np.concatenate([x, y]))
        v10.append((together[:m] - rankdata(x)) / n)
        v01.append(1 - (together[m:] - rankdata(y)) / m)
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    covariance = s10 / m + s01 / n
    auc = [float(v.mean()) for v in v10]
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    if variance <= 0:
        return float("nan"), float("nan")
    z = (auc[1] - auc[0]) / math.sqrt(variance)
    return float(z), float(2 * norm.sf(abs(z)))


def paired_differences(
    truth: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    said_a: np.ndarray,
    said_b: np.ndarray,
    patients: np.ndarray,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% intervals of B - A for every metric, from the same patient resamples for both runs."""
    found: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for index, draws in stats.patient_resamples(patients, rounds, seed):
        weights = stats.weights_of(index, draws)
        first = stats.binary_metrics(truth, a, said_a, weights)
        second = stats.binary_metrics(truth, b, said_b, weights)
        for metric in METRICS[:3]:
            found[metric].append(second[metric] - first[metric])
        total = weights.sum(axis=1)
        brier = weights @ ((b - truth) ** 2) / total - weights @ ((a - truth) ** 2) / total
        found["brier"].append(brier)
    return {m: stats.interval(np.concatenate(v)) for m, v in found.items()}


def point_metrics(truth: np.ndarray, score: np.ndarray, said: np.ndarray) -> dict[str, float]:
    once = stats.binary_metrics(truth, score, said, np.ones((1, len(truth))))
    found = {m: float(once[m][0]) for m in METRICS[:3]}
    found["brier"] = float(np.mean((score - truth) ** 2))
    return found


def run_folder(name: str, runs: Path) -> Path:
    """An experiment given by path (with a '/'), or by name under `runs`."""
    folder = Path(name) if "/" in name else runs / name
    if not folder.is_dir():
        raise DataError(f"{name}: no run folder {folder}; give an experiment name under {runs}")
    return folder


def predictions_of(folder: Path, on: str | None) -> tuple[pd.DataFrame, str, list[str]]:
    """A run's out-of-fold predictions (or its fold ensemble's on `on`), its positive class and
    classes, from cxr evaluate's files."""
    where = folder / "evaluation" if on is None else folder / "external" / on
    table, report = where / EVALUATION_FILES.predictions, where / EVALUATION_FILES.metrics
    command = "cxr evaluate --all-folds" + (f" --on {on}" if on else "")
    if not table.is_file() or not report.is_file():
        raise DataError(f"{folder.name} has no {table}: run `{command}` for it first")
    damaged = DataError(f"{where}: its predictions or metrics are damaged; run `{command}` again")
    try:
        found = (
            record_of(Evaluation, report) if on is None else record_of(ExternalEvaluation, report)
        )
        predictions = read_csv(
            table, dtype={"image": str, "patient_id": str}, keep_default_na=False
        )
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError):
        raise damaged from None
    pooled = found.pooled if isinstance(found, Evaluation) else found.ensemble
    if pooled.positive_class is None:
        raise DataError(
            f"{folder.name}: cxr compare compares binary tasks (a positive class); "
            f"{report} has none"
        )
    needed = {"fold", "image", "patient_id", "true_label", "predicted_label"}
    needed.add(f"prob_{pooled.positive_class}")
    if not needed <= set(predictions.columns):
        raise damaged
    if on is not None:
        predictions = predictions[predictions["fold"].astype(str) == "ensemble"]
    return predictions, pooled.positive_class, pooled.classes


def compare_runs(a: str, b: str, runs: Path = Path("runs"), on: str | None = None) -> Comparison:
    """B - A on the images both runs predicted, paired; writes <runs>/compare/<A>-vs-<B>/."""
    if on is not None:
        check_dataset_name(on, "--on")  # it names a folder below each run, and the output's
    folder_a, folder_b = run_folder(a, runs), run_folder(b, runs)
    first, positive, classes = predictions_of(folder_a, on)
    second, positive_b, classes_b = predictions_of(folder_b, on)
    if (positive, sorted(classes)) != (positive_b, sorted(classes_b)):
        raise DataError(
            f"{a} and {b} have other classes ({', '.join(classes)} against "
            f"{', '.join(classes_b)}) or positive classes ({positive} against {positive_b})"
        )
    both = first.merge(second, on="image", suffixes=("_a", "_b"))
    if len(both) < 2 or both["true_label_a"].nunique() < 2:
        raise DataError(
            f"{a} and {b} share {len(both)} predicted image(s) of "
            f"{both['true_label_a'].nunique()} class(es): compare needs runs on the same images "
            "of both classes (the same dataset and folds, or --on the same dataset)"
        )
    if (both["true_label_a"] != both["true_label_b"]).any():
        raise DataError(f"{a} and {b} disagree on the true class of some images: not the same data")
    truth = (both["true_label_a"] == positive).to_numpy(dtype=float)
    column = f"prob_{positive}"
    score_a, score_b = both[f"{column}_a"].to_numpy(float), both[f"{column}_b"].to_numpy(float)
    said_a = (both["predicted_label_a"] == positive).to_numpy()
    said_b = (both["predicted_label_b"] == positive).to_numpy()
    patients = patients_of(both)
    intervals = paired_differences(truth, score_a, score_b, said_a, said_b, patients)
    found_a, found_b = point_metrics(truth, score_a, said_a), point_metrics(truth, score_b, said_b)
    _, p_value = delong(truth, score_a, score_b)
    differences = [
        Difference(
            metric,
            found_a[metric],
            found_b[metric],
            found_b[metric] - found_a[metric],
            *intervals[metric],
            p_value if metric == "roc_auc" else None,
        )
        for metric in METRICS
    ]
    out = runs / "compare" / f"{folder_a.name}-vs-{folder_b.name}" / (on or "")
    result = Comparison(
        folder_a.name,
        folder_b.name,
        on,
        len(both),
        len(set(patients)),
        positive,
        differences,
        {folder_a.name: maps_of(folder_a, on), folder_b.name: maps_of(folder_b, on)},
        out,
    )
    write_comparison(result, truth, score_a, score_b)
    return result


def patients_of(both: pd.DataFrame) -> np.ndarray:
    """Each image's patient (its own when the id is missing), the same for both runs."""
    ids = known_patients(both["patient_id_a"])
    return ids.where(ids != "", both["image"]).to_numpy()


def maps_of(folder: Path, on: str | None) -> WhereMapsLook | None:
    """What the run's audit says of where its maps look: per predicted class the share of peaks
    in the lungs and the energy outside the chest, the map flags and the flags on evidence (the
    pooled audit, else its first fold's; None before any audit)."""
    root = folder if on is None else folder / "external" / on
    found = sorted((root / "audit").glob(f"fold*/{AUDIT_FILES.summary}"))
    path = root / "audit" / AUDIT_FILES.summary
    path = path if path.is_file() else (found[0] if found else None)
    summary = read_record(AuditSummary, path) if path else None
    if summary is None:
        return None
    regions = summary.shortcuts.regions
    groups = regions.per_class if regions else {}
    return WhereMapsLook(
        audit=str(path.relative_to(folder)),
        peaks_in_lungs={name: group.peaks["lung"].share for name, group in groups.items()},
        energy_outside_chest={name: group.outside_chest.mean for name, group in groups.items()},
        flagged_by_maps=summary.shortcuts.flagged_classes,
        flagged_on_evidence=summary.flagged_on_evidence,
    )


def write_comparison(
    result: Comparison, truth: np.ndarray, score_a: np.ndarray, score_b: np.ndarray
) -> None:
    folder = result.folder
    write_csv(
        pd.DataFrame([asdict(d) for d in result.differences]), folder / COMPARE_FILES.differences
    )
    data = asdict(result) | {"folder": str(folder)}
    write_json_atomic(folder / COMPARE_FILES.comparison, data)
    from sklearn.metrics import roc_curve

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, score in ((result.a, score_a), (result.b, score_b)):
        fpr, tpr, _ = roc_curve(truth, score)
        left.plot(fpr, tpr, label=name)
    left.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    left.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {result.images} images")
    left.legend(fontsize=8)
    peaks = {run: found.peaks_in_lungs if found else {} for run, found in result.maps.items()}
    names = sorted({c for shares in peaks.values() for c in shares})
    for offset, (run, found) in enumerate(peaks.items()):
        shares = [found.get(c, np.nan) for c in names]
        right.bar(np.arange(len(names)) + 0.4 * offset, shares, width=0.4, label=run)
    right.set_xticks(np.arange(len(names)) + 0.2, names)
    right.set(ylabel="share of map peaks inside the lungs", ylim=(0, 1), title="where maps look")
    right.legend(fontsize=8)
    save_figure(fig, folder / COMPARE_FILES.figure)
