"""evaluate(cfg, folds): out-of-fold predictions, scikit-learn metrics and plots, per fold and
pooled.

Reads only the run folders: each fold's best model, classes and split, and the dataset folder its
resolved config names.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from cxr.atomic import write_json_atomic
from cxr.config import Config
from cxr.data.pipeline import encode_labels, fold_dataset, images_named_on_failure
from cxr.documents import write_documents
from cxr.errors import DataError
from cxr.evaluate.calibration import plot_calibration, temperature_scaling
from cxr.evaluate.metrics import mean_and_std, metrics_from_predictions
from cxr.evaluate.operating import operating_points
from cxr.evaluate.subgroups import subgroups_of
from cxr.explain.report import output_probabilities
from cxr.external import External
from cxr.figures import plt, save_figure
from cxr.models.fusing import fuse_batch_norm
from cxr.results.evaluation import Evaluation, ExternalEvaluation, Metrics
from cxr.results.records import to_json
from cxr.runs import EVALUATION_FILES, pooled_evaluation_dir
from cxr.tables import write_csv
from cxr.trained import TrainedFold

log = logging.getLogger(__name__)


def predict_table(trained: TrainedFold, table: pd.DataFrame) -> pd.DataFrame:
    """Images of the fold's dataset (a table with image, label, patient_id; its validation images
    or the --on dataset's) through its best model: one row per image with every class
    probability."""
    run, cfg, classes = trained.run, trained.settings, trained.classes
    model = fuse_batch_norm(run.load_model())  # the same logits, sooner
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


def write_report(
    folder: Path,
    predictions: pd.DataFrame,
    report: object,
    metrics: Metrics,
    classes: list[str],
    positive: int | None,
) -> None:
    """predictions.csv, metrics.json (`report`, a record), roc.png and confusion.png (from
    `metrics`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(predictions, folder / EVALUATION_FILES.predictions)
    write_json_atomic(folder / EVALUATION_FILES.metrics, to_json(report))
    multi_label = metrics.multi_label
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
        matrices = metrics.confusion_matrices
        fig, axes = plt.subplots(1, len(classes), figsize=(2.2 * len(classes), 2.6), squeeze=False)
        for ax, name in zip(axes[0], classes, strict=True):
            skm.ConfusionMatrixDisplay(np.array(matrices[name]), display_labels=["no", "yes"]).plot(
                ax=ax, colorbar=False
            )
            ax.set_title(name, fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        skm.ConfusionMatrixDisplay(np.array(metrics.confusion_matrix), display_labels=classes).plot(
            ax=ax, colorbar=False
        )
    save_figure(fig, folder / EVALUATION_FILES.confusion)
    if metrics.calibration is not None:
        plot_calibration(folder, metrics.calibration)


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
    scaled = (
        temperature_scaling(
            pooled_predictions, classes, positive, multi_label, cfg.evaluate.calibration_bins
        )
        if cfg.evaluate.calibrate == "temperature"
        else None
    )
    folder = pooled_evaluation_dir(cfg)
    dataset_dir = trained[0].settings.data.dataset_dir
    pooled = dataclasses.replace(
        pooled,
        operating_points=operating_points(
            pooled_predictions, classes, positive, cfg.evaluate.target_sensitivity
        ),
        temperature=scaled,
        subgroups=subgroups_of(pooled_predictions, dataset_dir, classes, positive, cfg, folder),
    )
    report = Evaluation(folds, pooled, mean_and_std(per_fold), per_fold, folder)
    write_report(folder, pooled_predictions, report, pooled, classes, positive)
    write_documents(cfg, evaluation=report)
    return report


def evaluate_external(cfg: Config, folds: list[int], external: External) -> ExternalEvaluation:
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
    ensemble = dataclasses.replace(
        ensemble,
        subgroups=subgroups_of(
            ensemble_predictions, external.dataset_dir, classes, positive, cfg, external.folder
        ),
    )
    report = ExternalEvaluation(
        dataset=external.name,
        dataset_dir=str(external.dataset_dir),
        renamed=external.renames,
        folds=folds,
        ensemble=ensemble,
        mean_std=mean_and_std(per_fold),
        per_fold=per_fold,
        folder=external.folder,
    )
    write_report(external.folder, ensemble_predictions, report, ensemble, classes, positive)
    write_documents(cfg, external=report)
    return report
