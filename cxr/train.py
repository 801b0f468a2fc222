"""train(cfg, fold): one fold is validation, the others train; Keras callbacks do the bookkeeping.

Best checkpoint by a validation metric, early stopping, CSV and TensorBoard
logs, and BackupAndRestore so an interrupted fold resumes from its last
completed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr.atomic import FILE_MODE, atomic_path, follow_umask, write_json_atomic, write_text_atomic
from cxr.config import Config, TrainConfig, dump_config, load_config
from cxr.data.dataset import METADATA_FILE
from cxr.data.labels import LABELS_FILE, read_labels
from cxr.data.labels import class_names as table_class_names
from cxr.data.pipeline import checked_split, encode_labels, images_named_on_failure, make_dataset
from cxr.distribute import (
    Cluster,
    cluster_from_env,
    enable_multi_worker_fit,
    make_strategy,
    shard_by_data,
)
from cxr.errors import ConfigError, CxrError, DataError
from cxr.figures import plt, save_figure
from cxr.lungs.run import compute_lungs, has_lung_fields
from cxr.models.build import build_model
from cxr.models.metrics import make_loss_and_metrics
from cxr.models.precision import set_precision, use_mixed_precision
from cxr.provenance import provenance
from cxr.runs import (
    FoldRun,
    check_fold_run,
    check_not_training,
    check_run_options,
    finished_staging,
    fold_run,
    publish_run,
    staging_run,
    start_staging,
    training_lock,
)
from cxr.tables import write_csv
from cxr.tracking import check_tracking, log_training, tracked_training

log = logging.getLogger(__name__)
MODEL_ABOUT = "cxr.json"  # inside model.keras: classes and input (save_portable)
MONITOR_MODES = {"val_auc": "max", "val_accuracy": "max", "val_loss": "min"}
# what a --resume may change; the experiment's name and folder are the run's own, found by them
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.tracking",
    "data.cache",
    "experiment.name",
    "experiment.output_dir",
}


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
    if (
        info.is_file()
        and json.loads(info.read_text(encoding="utf-8")).get("multi_label", False)
        != cfg.data.multi_label
    ):
        kind = "multi-label" if cfg.data.multi_label is False else "single-label"
        raise DataError(
            f"dataset {cfg.data.dataset} is {kind}: set data.multi_label: "
            f"{str(not cfg.data.multi_label).lower()}"
        )
    found = table_class_names(table, cfg.data.multi_label)
    if len(found) < 2:
        raise DataError(
            f"dataset {cfg.data.dataset} has one class only ({', '.join(found)}): "
            "a classifier needs images of at least two classes"
        )
    if cfg.data.classes is None:
        return found
    unknown = sorted(set(found) - set(cfg.data.classes))
    if unknown:
        raise DataError(
            f"dataset has class(es) {', '.join(unknown)} that data.classes "
            f"({', '.join(cfg.data.classes)}) lacks"
        )
    return list(cfg.data.classes)


def compute_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights, n / (k * n_c), on the training split."""
    present = np.unique(labels)
    if len(present) != num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        raise DataError(
            f"the training split has no image of class index(es) {missing}; use fewer folds"
        )
    weights = compute_class_weight("balanced", classes=np.arange(num_classes), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


@dataclass
class Fit:
    """Everything a fold's training needs, built and checked before any file of a run is touched."""

    model: keras.Model
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset
    class_weight: dict[int, float] | None
    tables: pd.DataFrame  # training and validation images, to name unreadable ones


def train(
    cfg: Config, fold: int | None = None, overwrite: bool = False, resume: bool = False
) -> TrainResult:
    """Train one fold and keep its best checkpoint; returns the best epoch and value.

    Config, devices, data, model and weights are all checked before anything is written; the fold
    then trains in a staging folder that replaces the old run only once the new one has its
    checkpoint, so a failed or interrupted run never costs the previous one.
    """
    fold = cfg.data.fold if fold is None else fold
    check_tracking(cfg)  # before any folder is made
    cluster = cluster_from_env()
    if cluster is not None and resume:
        raise ConfigError(
            "--resume with several workers is not supported: restart the fold with --overwrite"
        )
    # before any other TF op (multi-worker)
    strategy = make_strategy(tuple(cfg.train.devices) if cfg.train.devices else None)
    # the chief (or a single machine) owns the fold; other workers write to a temporary copy
    owner = cluster is None or cluster.is_chief
    check_run_options(cfg, overwrite, resume)
    with training_lock(cfg, fold) if owner else contextlib.nullcontext():
        finished = finish_interrupted_save(cfg, fold) if owner else None
        if finished is not None and not overwrite:
            return finished
        return _train_locked(cfg, fold, strategy, cluster, overwrite, resume)


def finish_interrupted_save(cfg: Config, fold: int) -> TrainResult | None:
    """A fold whose training ended but whose final save was cut (a kill between the last epoch and
    the move into place) is moved into place now, rather than trained again."""
    staged = finished_staging(cfg, fold)
    if staged is None:
        return None
    log.warning(
        "fold %d had finished training in %s but was stopped before it was moved into place: "
        "moving it now",
        fold,
        staged.folder,
    )
    settings = staged.read_config()
    result = summarise(settings, staged, fold)
    save_portable(staged.model, model_about(settings, staged.read_classes()))
    publish_run(staged, fold_run(cfg, fold))
    return dataclasses.replace(result, run=fold_run(cfg, fold))


def _train_locked(
    cfg: Config,
    fold: int,
    strategy: tf.distribute.Strategy,
    cluster: Cluster | None,
    overwrite: bool,
    resume: bool,
) -> TrainResult:
    check_fold_run(cfg, fold, overwrite=overwrite, resume=resume)
    if resume:
        check_resumable(cfg, staging_run(cfg, fold), fold)
    if cfg.data.needs_lungs and not has_lung_fields(cfg.data.dataset_dir):
        log.info(
            "%s has no lung fields and data.crop or data.outside_lungs needs them: computing them "
            "(as `cxr lungs` does)",
            cfg.data.dataset_dir,
        )
        compute_lungs(cfg.data.dataset_dir)
    # once: columns, paths, folds, and that every image exists
    table = read_labels(cfg.data.dataset_dir)
    classes = resolve_classes(cfg, table)
    val_table = checked_split(table, fold, "validation", classes, cfg.data.multi_label)
    train_table = checked_split(table, fold, "train", classes, cfg.data.multi_label)
    fit = prepare_fit(cfg, strategy, classes, train_table, val_table)
    with worker_output(cfg, cluster) as worker_cfg:
        run = start_staging(worker_cfg, fold, resume)
        if resume:
            repair_history(run)
        write_run_inputs(run, worker_cfg, fold, classes, train_table, val_table)
        log.info(
            "fold %d: %d training, %d validation images -> %s",
            fold,
            len(train_table),
            len(val_table),
            run.folder,
        )
        tracked = worker_cfg if cluster is None or cluster.is_chief else untracked(worker_cfg)
        with (
            images_named_on_failure(cfg.data.dataset_dir, fit.tables),
            tracked_training(tracked, run, fold) as tracking,
        ):
            fit.model.fit(
                fit.train_ds,
                validation_data=fit.val_ds,
                epochs=cfg.train.epochs,
                class_weight=fit.class_weight,
                callbacks=make_callbacks(worker_cfg, run, resume) + tracking,
                shuffle=False,  # the training pipeline shuffles itself, reproducibly
                verbose=1 if sys.stdout.isatty() else 2,
            )
            follow_umask(run.logs)  # TensorBoard's folders, made by TensorFlow
            result = summarise(worker_cfg, run, fold)
            if tracking:
                log_training(run, result.best_epoch, result.best_value, result.monitor)
        save_portable(run.model, model_about(worker_cfg, classes))
        publish_run(run, fold_run(worker_cfg, fold))
    # another worker's temporary copy is gone: name the chief's
    return dataclasses.replace(result, run=fold_run(cfg, fold))


def untracked(cfg: Config) -> Config:
    """`cfg` with tracking off: another worker of a multi-worker training logs nothing."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"tracking": "none"})})


def check_resumable(cfg: Config, staging: FoldRun, fold: int) -> None:
    """A resume continues the same training: refuse one whose seed, model, data or train settings
    changed (the seed drew the first epochs' weights and batches).

    Only `train.epochs` (to train longer) and `data.cache` (where decoded images are kept) may
    change.
    """
    try:
        saved = load_config(staging.config)
    except CxrError:
        raise DataError(
            f"cannot resume fold {fold}: its saved config {staging.config} is missing or damaged; "
            "start the fold again with --overwrite"
        ) from None
    now = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
    before, after = saved.model_dump(mode="json"), now.model_dump(mode="json")
    changed = [
        f"{section}.{key} ({before[section].get(key)!r} -> {after[section][key]!r})"
        for section in ("experiment", "model", "data", "train")
        for key in after[section]
        if before[section].get(key) != after[section][key]
        and f"{section}.{key}" not in RESUMABLE_CHANGES
    ]
    if changed:
        raise ConfigError(
            f"cannot resume fold {fold} with other settings: {'; '.join(changed)}; "
            "resume with the settings it started with, or start again with --overwrite"
        )


@contextmanager
def worker_output(cfg: Config, cluster: Cluster | None) -> Iterator[Config]:
    """The config itself for the chief (or a single machine); for another worker, one writing to a
    temporary folder."""
    if cluster is None or cluster.is_chief:
        yield cfg
        return
    with tempfile.TemporaryDirectory(
        prefix=f"cxr-{cluster.task_type}{cluster.task_index}-"
    ) as folder:
        log.info(
            "%s %d is not the chief: its copy of the run goes to a temporary folder",
            cluster.task_type,
            cluster.task_index,
        )
        yield cfg.model_copy(
            update={"experiment": cfg.experiment.model_copy(update={"output_dir": Path(folder)})}
        )


def prepare_fit(
    cfg: Config,
    strategy: tf.distribute.Strategy,
    classes: list[str],
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
) -> Fit:
    """Build and compile the model (checking widths and weights) and the datasets (checking the
    cache)."""
    keras.utils.set_random_seed(cfg.experiment.seed)
    set_precision(use_mixed_precision(cfg.train.mixed_precision, "train.mixed_precision"))
    with strategy.scope():
        model = build_model(cfg, len(classes))
        loss, metrics = make_loss_and_metrics(len(classes), cfg.data.multi_label)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.train.learning_rate),
            loss=loss,
            metrics=metrics,
            jit_compile=cfg.train.xla,
        )

    common = {
        "image_size": cfg.data.image_size,
        "channels": cfg.data.channels,
        "batch_size": cfg.train.batch_size,
    }
    common |= {
        "multi_label": cfg.data.multi_label,
        "cache": cfg.data.cache,
        "seed": cfg.experiment.seed,
        "outside_lungs": cfg.data.outside_lungs,
        "crop": cfg.data.crop,
        "crop_margin": cfg.data.crop_margin,
    }
    train_ds = shard_by_data(
        make_dataset(
            cfg.data.dataset_dir,
            train_table,
            classes,
            training=True,
            flip=cfg.train.flip,
            erase_border=cfg.train.erase_border,
            **common,
        )
    )
    val_ds = shard_by_data(
        make_dataset(cfg.data.dataset_dir, val_table, classes, training=False, **common)
    )
    enable_multi_worker_fit(model, strategy, train_ds)
    class_weight = None
    if cfg.train.class_weights and not cfg.data.multi_label:
        class_weight = compute_class_weights(
            encode_labels(train_table["label"], classes), len(classes)
        )
        log.info("class weights: %s", {classes[i]: round(w, 3) for i, w in class_weight.items()})

    return Fit(model, train_ds, val_ds, class_weight, pd.concat([train_table, val_table]))


def make_callbacks(cfg: Config, run: FoldRun, resume: bool) -> list[keras.callbacks.Callback]:
    """Backup first, so that whenever a history row exists its epoch can be resumed from.

    Two backups are kept: a kill while one is being written falls back to the other. On resume the
    checkpoint only replaces the best model by a better one than the history already holds.
    """
    monitor, mode = cfg.train.monitor, MONITOR_MODES[cfg.train.monitor]
    best_so_far = best_in_history(run, monitor) if resume else None
    callbacks: list[keras.callbacks.Callback] = [
        SafeBackupAndRestore(str(run.backup), double_checkpoint=True),
        AtomicModelCheckpoint(
            str(run.model),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.CSVLogger(str(run.history), append=resume),
        keras.callbacks.TensorBoard(str(run.logs), write_graph=False, profile_batch=0),
    ]
    schedule = learning_rate_callback(cfg.train)
    if schedule is not None:
        callbacks.append(schedule)
    if cfg.train.early_stopping_patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=cfg.train.early_stopping_patience
            )
        )
    return callbacks


def learning_rate_callback(train: TrainConfig) -> keras.callbacks.Callback | None:
    """train.lr_schedule as a Keras callback: none for constant; plateau halves the rate when the
    validation loss has not improved for 2 epochs (down to 1/100); cosine lowers it from
    learning_rate towards 0 over train.epochs, epoch by epoch."""
    if train.lr_schedule == "plateau":
        return keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=2, min_lr=train.learning_rate / 100
        )
    if train.lr_schedule == "cosine":
        return keras.callbacks.LearningRateScheduler(
            lambda epoch: cosine_rate(train.learning_rate, epoch, train.epochs)
        )
    return None


def cosine_rate(base: float, epoch: int, epochs: int) -> float:
    """Cosine decay: `base` at epoch 0, half of it midway, approaching 0 at the end."""
    return base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


JUMP = 10.0  # a validation loss this many times the previous epoch's is an unstable run


def loss_jumps(history: pd.DataFrame) -> list[str]:
    """Epochs (from 1) whose validation loss is more than JUMP times the epoch before's."""
    if "val_loss" not in history or len(history) < 2:
        return []
    loss = history["val_loss"].to_numpy(dtype=float)
    epochs = history["epoch"].to_numpy(dtype=int) + 1
    return [
        f"epoch {epochs[i]}: {loss[i - 1]:.3g} -> {loss[i]:.3g}"
        for i in range(1, len(loss))
        if loss[i - 1] > 0 and loss[i] > JUMP * loss[i - 1]
    ]


def save_portable(path: Path, about: dict) -> None:
    """Save the best model again without its compile settings: they name cxr's AUC metric, which
    plain Keras cannot rebuild, so `keras.saving.load_model(path)` works without importing cxr.
    `about` (the classes and the input it expects) goes into the .keras archive as cxr.json,
    which Keras leaves alone, so the file alone says how to use it."""
    model = keras.models.load_model(path, compile=False)
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(MODEL_ABOUT, json.dumps(about, indent=2) + "\n")


def model_about(cfg: Config, classes: list[str]) -> dict:
    """What a user of model.keras elsewhere needs: classes in output order, the input's shape
    and pixel range, and how to read the outputs."""
    data = cfg.data
    return {
        "classes": classes,
        "input_shape": [data.image_size, data.image_size, data.channels],
        "input_pixels": "0-255, grey (one channel) or grey repeated; the model scales them itself",
        "outputs": "one sigmoid per class (multi-label)"
        if data.multi_label
        else "logits: softmax for class probabilities, or one logit (sigmoid) for two classes",
        "model": cfg.model.name,
        "made_by": "cxr",
    }


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Keras's ModelCheckpoint, saving to a temporary file that is renamed over the best model.

    A full disk or a kill during a save leaves the previous best model whole, never a cut
    model.keras.
    """

    def _save_model(self, epoch: int, batch: int | None, logs: dict | None) -> None:
        final = Path(self.filepath)
        # Keras picks the format by the suffix
        tmp = final.with_name(f".{final.stem}.partial{final.suffix}")
        tmp.unlink(missing_ok=True)
        self.filepath = str(tmp)
        try:
            super()._save_model(epoch, batch, logs)
            if tmp.is_file():  # Keras saved: this epoch is the best so far
                os.chmod(tmp, FILE_MODE)
                os.replace(tmp, final)
        finally:
            self.filepath = str(final)
            tmp.unlink(missing_ok=True)


class SafeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore, falling back to the older backup also when the newer one's metadata
    is cut.

    A kill while the small training_metadata.json is written leaves it empty; Keras falls back to
    the older (.bkp) pair only on an OSError and fails on the JSON instead. The older pair is one
    epoch behind, which is redone (and `tidy_history` keeps that epoch's last row); with no older
    pair (the first backup was cut), training starts again from the first epoch.
    """

    def on_train_begin(self, logs: dict | None = None) -> None:
        latest, older = Path(self._training_metadata_path), Path(self._prev_training_metadata_path)
        if latest.is_file() and not readable_json(latest):
            if older.is_file() and Path(self._prev_weights_path).is_file():
                log.warning(
                    "the last backup in %s was cut by the interruption: resuming from the one "
                    "before",
                    latest.parent,
                )
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                shutil.copyfile(older, latest)
            else:
                log.warning(
                    "the only backup in %s was cut by the interruption: starting from the first "
                    "epoch",
                    latest.parent,
                )
                latest.unlink()
                Path(self._weights_path).unlink(missing_ok=True)
        super().on_train_begin(logs)


def readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return True


def read_history(path: Path) -> pd.DataFrame:
    """The CSV history's complete rows: an empty file, or a last row cut by a kill or a full disk,
    are tolerated."""
    try:
        history = pd.read_csv(path, on_bad_lines="skip")
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()
    if "epoch" not in history.columns:
        return pd.DataFrame()
    # a cut row lacks its last values
    history = history.apply(pd.to_numeric, errors="coerce").dropna()
    history["epoch"] = history["epoch"].astype(int)
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def repair_history(run: FoldRun) -> None:
    """Before resuming: rewrite the history with its complete rows only, so that new rows append
    cleanly."""
    if not run.history.is_file():
        return
    history = read_history(run.history)
    if history.empty:
        write_text_atomic(run.history, "")
    else:
        write_csv(history, run.history)


def best_in_history(run: FoldRun, monitor: str) -> float | None:
    """The best monitored value an interrupted run reached (None when it has no complete epoch)."""
    if not run.model.is_file():
        return None
    history = read_history(run.history)
    if monitor not in history.columns or history.empty:
        return None
    return float(
        history[monitor].max() if MONITOR_MODES[monitor] == "max" else history[monitor].min()
    )


def tidy_history(run: FoldRun) -> pd.DataFrame:
    """After a resume an epoch redone from the older backup appears twice: keep its latest row."""
    tidy = read_history(run.history)
    if tidy.empty:
        raise DataError(f"{run.history} has no complete epoch: training wrote no history")
    write_csv(tidy, run.history)
    return tidy


def write_run_inputs(
    run: FoldRun,
    cfg: Config,
    fold: int,
    classes: list[str],
    train_table: pd.DataFrame,
    val_table: pd.DataFrame,
) -> None:
    """What later commands need to read this run without the original config: config, classes,
    split."""
    resolved = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
    config_text = dump_config(resolved)
    write_text_atomic(run.config, config_text)
    write_text_atomic(run.classes, json.dumps(classes) + "\n")
    labels = cfg.data.dataset_dir / LABELS_FILE
    write_json_atomic(run.provenance, provenance(labels, config_text))
    split = pd.concat([train_table.assign(split="train"), val_table.assign(split="validation")])
    write_csv(split[["image", "label", "patient_id", "fold", "split"]], run.split)


def plot_history(history: pd.DataFrame, monitor: str, best_epoch: int, path: Path) -> None:
    """history.png: the loss and the monitored metric by epoch (counted from 1), training and
    validation, the best epoch marked."""
    epochs = history["epoch"].to_numpy() + 1
    metric = monitor.removeprefix("val_")
    panels = ["loss"] if metric == "loss" else ["loss", metric]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        for column, label in ((name, "training"), (f"val_{name}", "validation")):
            if column in history:
                ax.plot(epochs, history[column], marker="o", markersize=3, label=label)
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    fig.suptitle(f"{path.parent.name}: best by {monitor}")
    save_figure(fig, path)


def summarise(cfg: Config, run: FoldRun, fold: int) -> TrainResult:
    """Best epoch and value from the CSV history (the source of truth, also after a resume)."""
    history = tidy_history(run)
    monitor = cfg.train.monitor
    if monitor not in history.columns:
        raise DataError(
            f"{run.history} has no {monitor} column; columns: {', '.join(history.columns)}"
        )
    best = (
        history[monitor].idxmax() if MONITOR_MODES[monitor] == "max" else history[monitor].idxmin()
    )
    jumps = loss_jumps(history)
    if jumps:
        log.warning(
            "fold %d: the validation loss jumped more than %gx in one epoch (%s): training is "
            "unstable; lower model.batchnorm_momentum (0.9, or 0.6 with few steps an epoch) or "
            "train.learning_rate, or set train.lr_schedule: plateau",
            fold,
            JUMP,
            "; ".join(jumps),
        )
    result = TrainResult(
        fold,
        run,
        int(history.loc[best, "epoch"]) + 1,  # counted from 1, as Keras prints "Epoch 8/8"
        float(history.loc[best, monitor]),
        monitor,
        history,
    )
    plot_history(history, monitor, result.best_epoch, run.history_figure)
    summary = {
        "fold": fold,
        "best_epoch": result.best_epoch,
        "monitor": monitor,
        "best_value": result.best_value,
        "epochs_run": len(history),
        "final": history.iloc[-1].to_dict(),
    }
    write_json_atomic(run.summary, summary)
    return result


def train_folds(
    cfg: Config, folds: list[int] | None, overwrite: bool = False, resume: bool = False
) -> list[TrainResult]:
    """Several folds in turn (all of the dataset's when `folds` is None)."""
    every = folds is None
    if folds is None:
        folds = dataset_folds(cfg.data.dataset_dir)
    cluster = cluster_from_env()
    if cluster is None or cluster.is_chief:  # the chief owns the folds (other workers: a copy)
        for fold in folds:  # a fold another process trains is named before any is trained
            check_not_training(cfg, fold)
    if every and resume:  # --all-folds --resume: the interrupted folds and those not trained yet
        done = [
            f
            for f in folds
            if fold_run(cfg, f).model.is_file() and not staging_run(cfg, f).backup.is_dir()
        ]
        if done:
            log.info("fold(s) %s already trained: not resumed", ", ".join(map(str, done)))
        return [
            train(cfg, f, resume=staging_run(cfg, f).backup.is_dir())
            for f in folds
            if f not in done
        ]
    return [train(cfg, fold, overwrite=overwrite, resume=resume) for fold in folds]


def dataset_folds(dataset_dir: Path) -> list[int]:
    """The fold numbers present in a dataset."""
    return sorted(read_labels(dataset_dir, check_files=False)["fold"].unique().tolist())
