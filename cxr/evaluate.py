"""evaluate(cfg, folds): out-of-fold predictions, scikit-learn metrics and plots, per fold and
pooled.

Reads only the run folders: each fold's best model, classes and split, and the dataset folder its
resolved config names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from cxr import stats
from cxr.atomic import write_json_atomic
from cxr.config import Config, EvaluateConfig
from cxr.data.labels import (
    known_patients,
    patient_keys,
    read_labels,
)
from cxr.data.pipeline import encode_labels, fold_dataset, images_named_on_failure
from cxr.documents import write_documents
from cxr.errors import DataError
from cxr.explain.report import output_probabilities
from cxr.external import External
from cxr.figures import plt, save_figure
from cxr.models.folding import fold_batch_norm
from cxr.runs import EVALUATION_FILES, pooled_evaluation_dir
from cxr.tables import write_csv
from cxr.trained import TrainedFold

log = logging.getLogger(__name__)
SCALAR_METRICS = ("roc_auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


@dataclass(frozen=True)
class Evaluation:
    per_fold: dict[int, dict]
    pooled: dict
    summary: dict[str, dict[str, float]]  # metric -> mean, std over folds
    folder: Path


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], positive: int | None
) -> dict:
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
    return {k: (float(v) if isinstance(v, np.floating | float) else v) for k, v in result.items()}


def predict_table(trained: TrainedFold, table: pd.DataFrame) -> pd.DataFrame:
    """Images of the fold's dataset (a table with image, label, patient_id; its validation images
    or the --on dataset's) through its best model: one row per image with every class
    probability."""
    run, cfg, classes = trained.run, trained.settings, trained.classes
    model = fold_batch_norm(run.load_model())  # the same logits, sooner
    ds = fold_dataset(cfg, table, classes, trained.batch_size)
    with images_named_on_failure(cfg.data.dataset_dir, table):
        logits = model.predict(ds.map(lambda x, y: x), verbose=0).astype("float32")
    probs = output_probabilities(logits, cfg.data.multi_label)
    return labelled_predictions(run.fold, table, probs, classes, cfg.data.multi_label)


def labelled_predictions(
    fold: int | str,
    table: pd.DataFrame,
    probs: np.ndarray,
    classes: list[str],
    multi_label: bool,
) -> pd.DataFrame:
    """One row per image: its truth, the predicted label, the confidence and every class
    probability."""
    if multi_label:  # predicted: every finding at p >= 0.5
        predicted = [
            "|".join(c for c, p in zip(classes, row, strict=True) if p >= 0.5) for row in probs
        ]
    else:
        predicted = [classes[i] for i in probs.argmax(axis=1)]
    predictions = pd.DataFrame(
        {
            "fold": fold,
            "image": table["image"].to_numpy(),
            "patient_id": table["patient_id"].to_numpy(),
            "true_label": table["label"].to_numpy(),
            "predicted_label": predicted,
            "confidence": probs.max(axis=1),
        }
    )
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = probs[:, i]
    return predictions


def compute_multilabel_metrics(truth: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Per finding (threshold 0.5) and macro-averaged over findings that have both outcomes;
    accuracy is per label."""
    guess = probs >= 0.5
    per_class = {}
    for c, name in enumerate(classes):
        t, g = truth[:, c].astype(bool), guess[:, c]
        both = 0 < t.sum() < len(t)
        per_class[name] = {
            "n_positive": int(t.sum()),
            "roc_auc": float(skm.roc_auc_score(t, probs[:, c])) if both else float("nan"),
            "sensitivity": float(skm.recall_score(t, g, zero_division=0))
            if t.any()
            else float("nan"),
            "specificity": float(skm.recall_score(~t, ~g, zero_division=0))
            if (~t).any()
            else float("nan"),
            "precision": float(skm.precision_score(t, g, zero_division=0)),
            "f1": float(skm.f1_score(t, g, zero_division=0)),
        }
    result: dict = {"n": len(truth), "classes": classes, "multi_label": True}
    for metric in ("roc_auc", "sensitivity", "specificity", "precision", "f1"):
        values = [v[metric] for v in per_class.values() if not np.isnan(v[metric])]
        result[metric] = float(np.mean(values)) if values else float("nan")
    result["accuracy"] = float((guess == truth.astype(bool)).mean())
    result["subset_accuracy"] = float((guess == truth.astype(bool)).all(axis=1).mean())
    result["per_class"] = per_class
    result["confusion_matrices"] = {
        n: m.tolist()
        for n, m in zip(classes, skm.multilabel_confusion_matrix(truth, guess), strict=True)
    }
    return result


def metrics_from_predictions(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int | None,
    multi_label: bool = False,
    settings: EvaluateConfig | None = None,
    seed: int = 0,
) -> dict:
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
        result |= uncertainty(predictions, probs, truth, classes, positive, settings, seed)
    if positive is not None and (patients := patient_metrics(predictions, classes, positive)):
        result["patients"] = patients
    return result


SUBGROUP_COLUMNS = ("sex", "age", "view", "site", "source", "hospital")
AGE_BANDS = (0, 18, 40, 60, 80, 200)  # years: children, young, middle-aged, older, oldest


def with_subgroups(predictions: pd.DataFrame, dataset_dir: Path) -> pd.DataFrame:
    """The predictions with the dataset's subgroup columns (sex, age, view, site, ...) that
    labels.csv has; age as a band."""
    labels = read_labels(dataset_dir, check_files=False)
    columns = [c for c in SUBGROUP_COLUMNS if c in labels.columns]
    if not columns:
        return predictions
    found = labels[["image", *columns]].copy()
    if "age" in found:
        years = pd.to_numeric(found["age"], errors="coerce")
        bands = pd.cut(years, AGE_BANDS, right=False)
        found["age"] = ["" if pd.isna(b) else f"{int(b.left)}-{int(b.right) - 1}" for b in bands]
    return predictions.merge(found, on="image", how="left")


def subgroup_table(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int,
    settings: EvaluateConfig,
    seed: int = 0,
) -> pd.DataFrame:
    """ROC AUC with its interval (patients resampled) per value of each subgroup column, the
    counts, and whether the interval lies wholly below the AUC over all images."""
    predictions = predictions.reset_index(drop=True)
    truth = (predictions["true_label"] == classes[positive]).to_numpy()
    score = predictions[f"prob_{classes[positive]}"].to_numpy()
    overall = float(stats.weighted_auc(score, truth, np.ones((1, len(score))))[0])
    patients = patient_keys(predictions)
    rows = []
    for column in (c for c in SUBGROUP_COLUMNS if c in predictions.columns):
        for value, part in predictions.groupby(predictions[column].astype(str)):
            if not value:
                continue
            mine = part.index.to_numpy()
            auc = float(stats.weighted_auc(score[mine], truth[mine], np.ones((1, len(mine))))[0])
            low, high = (
                stats.auc_intervals(
                    truth[mine, None], score[mine, None], patients[mine], settings.bootstrap, seed
                )[0]
                if settings.bootstrap
                else (float("nan"), float("nan"))
            )
            rows.append(
                {
                    "column": column,
                    "value": value,
                    "images": len(mine),
                    "positives": int(truth[mine].sum()),
                    "roc_auc": auc,
                    "ci95_low": low,
                    "ci95_high": high,
                    "overall_auc": overall,
                    "below_overall": bool(high < overall),
                }
            )
    return pd.DataFrame(rows)


def add_subgroups(
    metrics: dict,
    predictions: pd.DataFrame,
    dataset_dir: Path,
    classes: list[str],
    positive: int | None,
    cfg: Config,
    folder: Path,
) -> None:
    """A binary task's subgroup table (subgroups.csv, and `subgroups` in the metrics) when the
    dataset has subgroup columns."""
    if positive is None:
        return
    found = with_subgroups(predictions, dataset_dir)
    table = subgroup_table(found, classes, positive, cfg.evaluate, cfg.experiment.seed)
    if table.empty:
        return
    write_csv(table, folder / EVALUATION_FILES.subgroups)
    metrics["subgroups"] = table.to_dict("records")


def temperature_scaling(
    predictions: pd.DataFrame,
    classes: list[str],
    positive: int | None,
    multi_label: bool,
    bins: int = 10,
) -> dict:
    """Calibration before and after temperature scaling cross-fitted over folds (each fold's
    temperature fitted on the other folds' predictions); adds calibrated_prob_<class> columns.
    Empty, with a warning, where it cannot be done honestly."""
    if multi_label or predictions["fold"].nunique() < 2:
        log.warning(
            "evaluate.calibrate: temperature needs a single-label task and two or more evaluated "
            "folds (each fold's temperature is fitted on the others); not done"
        )
        return {}
    probs = predictions[[f"prob_{name}" for name in classes]].to_numpy()
    truth = encode_labels(predictions["true_label"], classes)
    calibrated, temperatures = stats.cross_fitted_temperature(
        probs, truth, predictions["fold"].to_numpy()
    )
    for i, name in enumerate(classes):
        predictions[f"calibrated_prob_{name}"] = calibrated[:, i]

    def judged(p: np.ndarray) -> dict:
        probability, happened, _ = calibration_subject(p, truth, classes, positive)
        found = stats.calibration(probability, happened, bins)
        return {
            "ece": found["ece"],
            "brier": found["brier"],
            "nll": stats.negative_log_likelihood(p, truth),
        }

    return {"per_fold": temperatures, "before": judged(probs), "after": judged(calibrated)}


def operating_points(
    predictions: pd.DataFrame, classes: list[str], positive: int | None, target: float
) -> dict:
    """A binary task's Youden and target-sensitivity thresholds chosen out of fold over several
    folds' predictions (cxr.stats.out_of_fold_operating_points); empty otherwise."""
    if positive is None or predictions["fold"].nunique() < 2:
        return {}
    truth = (predictions["true_label"] == classes[positive]).to_numpy()
    score = predictions[f"prob_{classes[positive]}"].to_numpy()
    return stats.out_of_fold_operating_points(truth, score, predictions["fold"].to_numpy(), target)


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
        out["calibration"] = stats.calibration(probs.ravel(), truth.ravel(), bins)
        out["calibration"]["of"] = "every finding's probability"
        return out
    probability, happened, subject = calibration_subject(probs, truth, classes, positive)
    out["calibration"] = stats.calibration(probability, happened, bins) | {"of": subject}
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


def patient_metrics(
    predictions: pd.DataFrame, classes: list[str], positive: int
) -> dict[str, dict] | None:
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
    result: dict[str, dict] = {}
    for how in ("max", "mean"):
        score = grouped[column].agg(how).to_numpy()
        probs = np.zeros((len(score), len(classes)))
        probs[:, positive], probs[:, 1 - positive] = score, 1 - score
        index = np.where(truth, positive, 1 - positive)
        found = compute_metrics(index, probs, classes, positive)
        result[how] = {k: found[k] for k in ("n", *SCALAR_METRICS)}
    return result


def plot_calibration(folder: Path, metrics: dict) -> None:
    """calibration.png: the reliability diagram (mean predicted probability against the observed
    frequency, per equal-count bin), with the bins' sizes."""
    found = metrics["calibration"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    top.plot(found["mean_predicted"], found["observed"], "o-", label="model")
    top.set(
        ylabel="observed frequency",
        title=f"{found['of']}: ECE {found['ece']:.3f}, Brier {found['brier']:.3f}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(found["mean_predicted"], found["counts"], width=0.02)
    bottom.set(xlabel="mean predicted probability (equal-count bins)", ylabel="images")
    save_figure(fig, folder / EVALUATION_FILES.calibration)


def write_report(
    folder: Path,
    predictions: pd.DataFrame,
    report: dict,
    metrics: dict,
    classes: list[str],
    positive: int | None,
) -> None:
    """predictions.csv, metrics.json (`report`), roc.png and confusion.png (from `metrics`) in
    `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(predictions, folder / EVALUATION_FILES.predictions)
    write_json_atomic(folder / EVALUATION_FILES.metrics, report)
    multi_label = bool(metrics.get("multi_label"))
    probs = predictions[[f"prob_{name}" for name in classes]].to_numpy()
    truth = encode_labels(predictions["true_label"], classes, multi_label=multi_label)
    hot = truth.astype(bool) if multi_label else np.eye(len(classes), dtype=bool)[truth]
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in [positive] if positive is not None else range(len(classes)):
        if 0 < hot[:, c].sum() < len(hot):
            skm.RocCurveDisplay.from_predictions(hot[:, c], probs[:, c], name=classes[c], ax=ax)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    ax.set_title(f"ROC (n = {len(hot)})")
    save_figure(fig, folder / EVALUATION_FILES.roc)
    if multi_label:
        matrices = metrics["confusion_matrices"]
        fig, axes = plt.subplots(1, len(classes), figsize=(2.2 * len(classes), 2.6), squeeze=False)
        for ax, name in zip(axes[0], classes, strict=True):
            skm.ConfusionMatrixDisplay(np.array(matrices[name]), display_labels=["no", "yes"]).plot(
                ax=ax, colorbar=False
            )
            ax.set_title(name, fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        skm.ConfusionMatrixDisplay(
            np.array(metrics["confusion_matrix"]), display_labels=classes
        ).plot(ax=ax, colorbar=False)
    save_figure(fig, folder / EVALUATION_FILES.confusion)
    if "calibration" in metrics:
        plot_calibration(folder, metrics)


def open_folds(
    cfg: Config, folds: list[int], external: External | None = None
) -> list[TrainedFold]:
    """The trained folds (cxr.trained: settings, classes, positive class), which must share their
    classes."""
    trained = [TrainedFold.open(cfg, fold, external) for fold in folds]
    for other in trained[1:]:
        if other.classes != trained[0].classes:
            raise DataError(
                f"fold {other.fold} was trained with classes {other.classes}, fold "
                f"{trained[0].fold} with {trained[0].classes}"
            )
    return trained


def mean_and_std(per_fold: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Each scalar metric's mean and standard deviation over folds."""
    found = {m: np.array([f[m] for f in per_fold.values()], dtype=float) for m in SCALAR_METRICS}
    defined = {m: values[np.isfinite(values)] for m, values in found.items()}
    return {  # over the folds where the metric is defined; NaN (null) where it is nowhere
        m: {
            "mean": float(values.mean()) if len(values) else float("nan"),
            "std": float(values.std()) if len(values) else float("nan"),
        }
        for m, values in defined.items()
    }


def evaluate(cfg: Config, folds: list[int]) -> Evaluation:
    """Per-fold reports, then pooled metrics over every evaluated image and mean ± std over
    folds."""
    if not folds:
        raise DataError(
            f"no trained folds to evaluate for experiment {cfg.experiment.name!r}; run `cxr train` "
            "first"
        )
    trained = open_folds(cfg, folds)
    classes, positive = trained[0].classes, trained[0].positive
    multi_label = trained[0].settings.data.multi_label
    per_fold, all_predictions = {}, []
    for fold in trained:
        predictions = predict_table(fold, fold.table())
        per_fold[fold.fold] = metrics_from_predictions(
            predictions, classes, positive, multi_label, cfg.evaluate, cfg.experiment.seed
        )
        write_report(
            fold.run.evaluation,
            predictions,
            per_fold[fold.fold],
            per_fold[fold.fold],
            classes,
            positive,
        )
        all_predictions.append(predictions)
        log.debug("fold %d evaluated: %d images", fold.fold, len(predictions))
    pooled_predictions = pd.concat(all_predictions, ignore_index=True)
    pooled = metrics_from_predictions(
        pooled_predictions, classes, positive, multi_label, cfg.evaluate, cfg.experiment.seed
    )
    chosen = operating_points(
        pooled_predictions, classes, positive, cfg.evaluate.target_sensitivity
    )
    if chosen:
        pooled["operating_points"] = chosen
    if cfg.evaluate.calibrate == "temperature":
        scaled = temperature_scaling(
            pooled_predictions, classes, positive, multi_label, cfg.evaluate.calibration_bins
        )
        if scaled:
            pooled["temperature"] = scaled
    summary = mean_and_std(per_fold)
    folder = pooled_evaluation_dir(cfg)
    dataset_dir = trained[0].settings.data.dataset_dir
    add_subgroups(pooled, pooled_predictions, dataset_dir, classes, positive, cfg, folder)
    report = {"folds": folds, "pooled": pooled, "mean_std": summary, "per_fold": per_fold}
    write_report(folder, pooled_predictions, report, pooled, classes, positive)
    write_documents(cfg)
    return Evaluation(per_fold, pooled, summary, folder)


def evaluate_external(cfg: Config, folds: list[int], external: External) -> Evaluation:
    """Every image of another dataset through each fold's model and through the fold ensemble (the
    mean of their probabilities), with reports in runs/<experiment>/external/<dataset>/."""
    if not folds:
        raise DataError(
            f"no trained folds of experiment {cfg.experiment.name!r} to run on {external.name}; "
            "run `cxr train` first"
        )
    trained = open_folds(cfg, folds, external)
    classes, positive = trained[0].classes, trained[0].positive
    multi_label = trained[0].settings.data.multi_label
    table = trained[0].table()  # the same images for every fold's model
    per_fold, probabilities = {}, []
    columns = [f"prob_{name}" for name in classes]
    for fold in trained:
        predictions = predict_table(fold, table)
        per_fold[fold.fold] = metrics_from_predictions(
            predictions, classes, positive, multi_label, cfg.evaluate, cfg.experiment.seed
        )
        write_report(
            external.folder / f"fold{fold.fold}",
            predictions,
            per_fold[fold.fold],
            per_fold[fold.fold],
            classes,
            positive,
        )
        probabilities.append(predictions[columns].to_numpy())
    mean = np.mean(probabilities, axis=0)
    ensemble_predictions = labelled_predictions("ensemble", table, mean, classes, multi_label)
    spread = np.std(probabilities, axis=0)  # how much the fold models disagree, per class
    for i, name in enumerate(classes):
        ensemble_predictions[f"std_{name}"] = spread[:, i]
    ensemble = metrics_from_predictions(
        ensemble_predictions, classes, positive, multi_label, cfg.evaluate, cfg.experiment.seed
    )
    add_subgroups(
        ensemble,
        ensemble_predictions,
        external.dataset_dir,
        classes,
        positive,
        cfg,
        external.folder,
    )
    summary = mean_and_std(per_fold)
    report = {
        "dataset": external.name,
        "dataset_dir": str(external.dataset_dir),
        "renamed": external.renames,
        "folds": folds,
        "ensemble": ensemble,
        "mean_std": summary,
        "per_fold": per_fold,
    }
    write_report(external.folder, ensemble_predictions, report, ensemble, classes, positive)
    write_documents(cfg)
    return Evaluation(per_fold, ensemble, summary, external.folder)
