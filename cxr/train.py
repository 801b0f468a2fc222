"""train(cfg, fold): one fold is validation, the others train; Keras callbacks do the bookkeeping.

Best checkpoint by a validation metric, early stopping, CSV and TensorBoard
logs, and BackupAndRestore so an interrupted fold resumes from its last
completed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr.config import Config, dump_config
from cxr.data.dataset import METADATA_FILE
from cxr.data.labels import class_names as table_class_names
from cxr.data.labels import read_labels
from cxr.data.pipeline import checked_split, encode_labels, images_named_on_failure, make_dataset
from cxr.distribute import Cluster, cluster_from_env, enable_multi_worker_fit, make_strategy, shard_by_data
from cxr.errors import ConfigError, DataError
from cxr.models.metrics import make_loss_and_metrics
from cxr.models.precision import set_precision, use_mixed_precision
from cxr.models.registry import build_model
from cxr.runs import FoldRun, fold_run, prepare_fold_run, write_text_atomic

log = logging.getLogger(__name__)
MONITOR_MODES = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}


@dataclass(frozen=True)
class TrainResult:
    fold: int
    run: FoldRun
    best_epoch: int
    best_value: float
    monitor: str
    history: pd.DataFrame


def resolve_classes(cfg: Config, table: pd.DataFrame) -> list[str]:
    """The configured class order, or the sorted names in the dataset."""
    info = cfg.data.dataset_dir / METADATA_FILE
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("multi_label", False) != cfg.data.multi_label:
        kind = "multi-label" if cfg.data.multi_label is False else "single-label"
        raise DataError(f"dataset {cfg.data.dataset} is {kind}: set data.multi_label: {str(not cfg.data.multi_label).lower()}")
    found = table_class_names(table, cfg.data.multi_label)
    if cfg.data.classes is None:
        return found
    unknown = sorted(set(found) - set(cfg.data.classes))
    if unknown:
        raise DataError(f"dataset has class(es) {', '.join(unknown)} that data.classes ({', '.join(cfg.data.classes)}) lacks")
    return list(cfg.data.classes)


def compute_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights, n / (k * n_c), on the training split."""
    present = np.unique(labels)
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise DataError(f"the training split has no image of class index(es) {missing}; use fewer folds")
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def train(cfg: Config, fold: int | None = None, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Train one fold and keep its best checkpoint; returns the best epoch and value."""
    fold = cfg.data.fold if fold is None else fold
    cluster = cluster_from_env()
    if cluster is not None and resume:
        raise ConfigError("--resume with several workers is not supported: restart the fold with --overwrite")
    strategy = make_strategy(tuple(cfg.train.devices) if cfg.train.devices else None)  # before any other TF op (multi-worker)
    table = read_labels(cfg.data.dataset_dir)  # once: columns, paths, folds, and that every image exists
    classes = resolve_classes(cfg, table)
    val_table = checked_split(table, fold, "validation", classes, cfg.data.multi_label)
    train_table = checked_split(table, fold, "train", classes, cfg.data.multi_label)
    with worker_output(cfg, cluster) as worker_cfg:
        run = prepare_fold_run(worker_cfg, fold, overwrite=overwrite, resume=resume)
        write_run_inputs(run, worker_cfg, fold, classes, train_table, val_table)
        fit_fold(worker_cfg, run, strategy, classes, train_table, val_table, resume)
        result = summarise(worker_cfg, run, fold)
    return dataclasses.replace(result, run=fold_run(cfg, fold))  # another worker's temporary copy is gone: name the chief's


@contextmanager
def worker_output(cfg: Config, cluster: Cluster | None) -> Iterator[Config]:
    """The config itself for the chief (or a single machine); for another worker, one writing to a temporary folder."""
    if cluster is None or cluster.is_chief:
        yield cfg
        return
    with tempfile.TemporaryDirectory(prefix=f"cxr-{cluster.task_type}{cluster.task_index}-") as folder:
        log.info("%s %d is not the chief: its copy of the run goes to a temporary folder", cluster.task_type, cluster.task_index)
        yield cfg.model_copy(update={"experiment": cfg.experiment.model_copy(update={"output_dir": Path(folder)})})


def fit_fold(
    cfg: Config, run: FoldRun, strategy: tf.distribute.Strategy, classes: list[str], train_table: pd.DataFrame, val_table: pd.DataFrame,
    resume: bool,
) -> None:  # fmt: skip
    """Build, compile and fit the model; the callbacks write the run folder."""
    keras.utils.set_random_seed(cfg.experiment.seed)
    set_precision(use_mixed_precision(cfg.train.mixed_precision, "train.mixed_precision"))
    with strategy.scope():
        model = build_model(cfg, len(classes))
        loss, metrics = make_loss_and_metrics(len(classes), cfg.data.multi_label)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate), loss=loss, metrics=metrics, jit_compile=cfg.train.xla)

    common = {"image_size": cfg.data.image_size, "channels": cfg.data.channels, "batch_size": cfg.train.batch_size}
    common |= {"multi_label": cfg.data.multi_label, "cache": cfg.data.cache, "seed": cfg.experiment.seed}
    train_ds = shard_by_data(make_dataset(cfg.data.dataset_dir, train_table, classes, training=True, flip=cfg.train.flip, **common))
    val_ds = shard_by_data(make_dataset(cfg.data.dataset_dir, val_table, classes, training=False, **common))
    enable_multi_worker_fit(model, strategy, train_ds)
    class_weight = None
    if cfg.train.class_weights and not cfg.data.multi_label:
        class_weight = compute_class_weights(encode_labels(train_table["label"], classes), len(classes))
        log.info("class weights: %s", {classes[i]: round(w, 3) for i, w in class_weight.items()})

    log.info("fold %d: %d training, %d validation images -> %s", run.fold, len(train_table), len(val_table), run.folder)
    with images_named_on_failure(cfg.data.dataset_dir, pd.concat([train_table, val_table])):
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=cfg.train.epochs,
            class_weight=class_weight,
            callbacks=make_callbacks(cfg, run, resume),
            shuffle=False,  # the training pipeline shuffles itself, reproducibly
            verbose=1 if sys.stdout.isatty() else 2,
        )


def make_callbacks(cfg: Config, run: FoldRun, resume: bool) -> list[keras.callbacks.Callback]:
    """Backup first, so that whenever a history row exists its epoch can be resumed from.

    Two backups are kept: a kill while one is being written falls back to the other. On resume the
    checkpoint only replaces the best model by a better one than the history already holds.
    """
    monitor, mode = cfg.train.monitor, MONITOR_MODES[cfg.train.monitor]
    best_so_far = best_in_history(run, monitor) if resume else None
    callbacks: list[keras.callbacks.Callback] = [
        SafeBackupAndRestore(str(run.backup), double_checkpoint=True),
        keras.callbacks.ModelCheckpoint(
            str(run.model), monitor=monitor, mode=mode, save_best_only=True, initial_value_threshold=best_so_far
        ),
        keras.callbacks.CSVLogger(str(run.history), append=resume),
        keras.callbacks.TensorBoard(str(run.logs), write_graph=False, profile_batch=0),
    ]
    if cfg.train.early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.early_stopping_patience))
    return callbacks


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore, falling back to the older backup also when the newer one's metadata is cut.

    A kill while the small training_metadata.json is written leaves it empty; Keras falls back to the
    older (.bkp) pair only on an OSError and fails on the JSON instead. The older pair is one epoch behind,
    which is redone (and `tidy_history` keeps that epoch's last row); with no older pair (the first backup
    was cut), training starts again from the first epoch.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        latest, older = Path(self._training_metadata_path), Path(self._prev_training_metadata_path)
        if latest.is_file() and not readable_json(latest):
            if older.is_file() and Path(self._prev_weights_path).is_file():
                log.warning("the last backup in %s was cut by the interruption: resuming from the one before", latest.parent)
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                shutil.copyfile(older, latest)
            else:
                log.warning("the only backup in %s was cut by the interruption: starting from the first epoch", latest.parent)
                latest.unlink()
                Path(self._weights_path).unlink(missing_ok=True)
        super().on_train_begin(logs)


def readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def best_in_history(run: FoldRun, monitor: str) -> float | None:
    """The best monitored value an interrupted run reached (None when it has no complete epoch)."""
    if not run.history.is_file() or not run.model.is_file():
        return None
    history = pd.read_csv(run.history)
    if monitor not in history.columns or history.empty:
        return None
    return float(history[monitor].max() if MONITOR_MODES[monitor] == "max" else history[monitor].min())


def tidy_history(run: FoldRun) -> pd.DataFrame:
    """After a resume an epoch redone from the older backup appears twice: keep its latest row."""
    history = pd.read_csv(run.history)
    tidy = history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    if len(tidy) != len(history):
        write_text_atomic(run.history, tidy.to_csv(index=False))
    return tidy


def write_run_inputs(run: FoldRun, cfg: Config, fold: int, classes: list[str], train_table: pd.DataFrame, val_table: pd.DataFrame) -> None:
    """What later commands need to read this run without the original config: config, classes, split."""
    resolved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
    write_text_atomic(run.config, dump_config(resolved))
    write_text_atomic(run.classes, json.dumps(classes) + "\n")
    split = pd.concat([train_table.assign(split="train"), val_table.assign(split="validation")])
    write_text_atomic(run.split, split[["image", "label", "patient_id", "fold", "split"]].to_csv(index=False))


def summarise(cfg: Config, run: FoldRun, fold: int) -> TrainResult:
    """Best epoch and value from the CSV history (the source of truth, also after a resume)."""
    history = tidy_history(run)
    monitor = cfg.train.monitor
    if monitor not in history.columns:
        raise DataError(f"{run.history} has no {monitor} column; columns: {', '.join(history.columns)}")
    best = history[monitor].idxmax() if MONITOR_MODES[monitor] == "max" else history[monitor].idxmin()
    result = TrainResult(fold, run, int(history.loc[best, "epoch"]), float(history.loc[best, monitor]), monitor, history)
    summary = {"fold": fold, "best_epoch": result.best_epoch, "monitor": monitor, "best_value": result.best_value,
               "epochs_run": len(history), "final": history.iloc[-1].to_dict()}  # fmt: skip
    write_text_atomic(run.summary, json.dumps(summary, indent=2) + "\n")
    return result


def train_folds(cfg: Config, folds: list[int] | None, overwrite: bool = False, resume: bool = False) -> list[TrainResult]:
    """Several folds in turn (all of the dataset's when `folds` is None)."""
    if folds is None:
        folds = dataset_folds(cfg.data.dataset_dir)
    return [train(cfg, fold, overwrite=overwrite, resume=resume) for fold in folds]


def dataset_folds(dataset_dir: Path) -> list[int]:
    """The fold numbers present in a dataset."""
    return sorted(read_labels(dataset_dir, check_files=False)["fold"].unique().tolist())
