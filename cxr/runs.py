"""The run folder is the interface between commands; this module spells every path in it.

runs/<experiment>/
  fold<K>/   model.keras (best), config.yaml (resolved), classes.json, split.csv,
             history.csv, history.png, summary.json, provenance.json (versions, digests),
             tracking.json (its MLflow run, with train.tracking: mlflow), logs/ (TensorBoard),
             evaluation/ (predictions.csv, metrics.json, roc.png, confusion.png)
  evaluation/  the same over all evaluated folds, pooled, plus mean and std
  explain/fold<K>/, audit/fold<K>/  what explain and audit write for a fold (audit/ also pooled)
  external/<dataset>/  the same for another dataset (evaluate --on, explain --on, audit --on)
  explain/fold<K>/index.html  the fold's review page (review.js its data, films/ its images)
  MODEL_CARD.md, MODEL_CARD.html, index.html (links to all of the above)
  .training/fold<K>/  a fold while it trains; it replaces fold<K>/ only once it has its checkpoint
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.config import Config, fixed_differences, load_config, with_analysis_settings
from cxr.data.labels import IMAGE_COLUMNS, LABELS_FILE, check_image_files, read_labels
from cxr.errors import ConfigError, DataError, shorten
from cxr.locks import check_free, hold
from cxr.tables import read_csv

REVIEW_PAGE = "index.html"  # a fold's review page in explain/fold<K>/, and the experiment's index


# The files each command writes in its folder (command_dir): writers and readers name them here.
@dataclass(frozen=True)
class ExperimentFiles:
    """runs/<experiment>/: the documents every command rewrites (cxr.documents)."""

    card: str = "MODEL_CARD.md"
    card_page: str = "MODEL_CARD.html"
    claim: str = "CLAIM.md"
    index: str = REVIEW_PAGE  # links to everything the experiment holds


@dataclass(frozen=True)
class EvaluationFiles:
    """evaluation/ of a fold, of the pooled folds (with mean and std) and of an external set."""

    predictions: str = "predictions.csv"
    metrics: str = "metrics.json"
    subgroups: str = "subgroups.csv"
    roc: str = "roc.png"
    confusion: str = "confusion.png"
    calibration: str = "calibration.png"


@dataclass(frozen=True)
class ExplainFiles:
    """explain/fold<K>/ (and explain/: the report over several folds, their review page)."""

    report: str = "report.csv"
    summary: str = "summary.json"
    maps: str = "maps.npz"  # --save-maps
    montage: str = "montage.png"
    fold_agreement: str = "fold_agreement.csv"  # --fold-agreement
    review_page: str = REVIEW_PAGE
    review_data: str = "review.js"  # the review page's data, read by its script tag


@dataclass(frozen=True)
class AuditFiles:
    """audit/fold<K>/ (and audit/: the pooled summary and methods table)."""

    summary: str = "summary.json"
    methods: str = "methods.csv"
    methods_figure: str = "methods.png"
    methods_by_fold: str = "methods_by_fold.csv"
    localisation: str = "localisation.csv"
    shortcuts: str = "shortcuts.csv"
    sanity: str = "sanity.csv"
    faithfulness: str = "faithfulness.csv"
    faithfulness_figure: str = "faithfulness.png"
    map_metrics: str = "map_metrics.csv"
    road: str = "road.csv"
    interventions: str = "interventions.csv"
    pastes: str = "pastes.csv"
    method_maps: str = "method_maps.csv"  # the sample's overlays by method, for the review page
    data_randomisation: str = "data_randomisation.csv"  # --data-randomisation
    data_randomisation_summary: str = "data_randomisation.json"


@dataclass(frozen=True)
class CompareFiles:
    """compare/<A>-vs-<B>/ (and its <dataset>/ for --on)."""

    differences: str = "differences.csv"
    comparison: str = "comparison.json"
    figure: str = "comparison.png"


def sharded(name: str, shard: tuple[int, int] | None) -> str:
    """A file's name for the I-th of N parts of a fold (`explain --shard I/N`): report.csv ->
    report.shard1of4.csv; the whole fold's name without a shard."""
    if shard is None:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.shard{shard[0]}of{shard[1]}.{suffix}"


def shard_files(folder: Path, name: str) -> list[Path]:
    """The whole fold's file `name` and every shard's, in name order."""
    stem, suffix = name.rsplit(".", 1)
    return sorted({*folder.glob(f"{stem}.shard*of*.{suffix}"), *folder.glob(name)})


EXPERIMENT_FILES = ExperimentFiles()
EVALUATION_FILES = EvaluationFiles()
EXPLAIN_FILES = ExplainFiles()
AUDIT_FILES = AuditFiles()
COMPARE_FILES = CompareFiles()

STAGING = ".training"
log = logging.getLogger(__name__)
_NOTED: set[tuple[str, ...]] = set()  # differences already reported in this process


@dataclass(frozen=True)
class FoldRun:
    """Paths of one trained (or training) fold."""

    folder: Path

    @property
    def fold(self) -> int:
        return int(self.folder.name.removeprefix("fold"))

    model = property(lambda self: self.folder / "model.keras")
    config = property(lambda self: self.folder / "config.yaml")
    classes = property(lambda self: self.folder / "classes.json")
    split = property(lambda self: self.folder / "split.csv")
    history = property(lambda self: self.folder / "history.csv")
    history_figure = property(lambda self: self.folder / "history.png")
    provenance = property(lambda self: self.folder / "provenance.json")
    tracking = property(lambda self: self.folder / "tracking.json")  # its MLflow run
    summary = property(lambda self: self.folder / "summary.json")
    logs = property(lambda self: self.folder / "logs")
    backup = property(lambda self: self.folder / "backup")
    evaluation = property(lambda self: self.folder / "evaluation")

    def damaged(self, path: Path, problem: str) -> DataError:
        return DataError(
            f"{path} is {problem}; train fold {self.fold} again with `cxr train --config <your "
            f"config> --fold {self.fold} --overwrite`"
        )

    def read_classes(self) -> list[str]:
        try:
            classes = json.loads(self.classes.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise self.damaged(self.classes, "missing or damaged (not JSON)") from None
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, str) for c in classes)
        ):
            raise self.damaged(self.classes, "damaged (expected a list of two or more class names)")
        return classes

    def read_config(self) -> Config:
        """The config the fold was trained with."""
        try:
            return load_config(self.config)
        except ConfigError as exc:
            raise self.damaged(
                self.config, f"missing or damaged ({shorten(str(exc), 200)})"
            ) from None

    def settings(self, cfg: Config) -> Config:
        """The config evaluate, explain and audit use for this fold: what the model was trained
        with from its saved config.yaml, the analysis settings from `cfg` (config.FIXED_BY_RUN)."""
        trained = self.read_config()
        differences = fixed_differences(trained, cfg)
        if differences and tuple(differences) not in _NOTED:
            _NOTED.add(tuple(differences))
            log.warning(
                "the trained run's own settings are used where the config says otherwise: %s",
                "; ".join(differences),
            )
        return with_analysis_settings(trained, cfg)

    def read_split(self) -> pd.DataFrame:
        """split.csv: which images trained and which validated this fold."""
        try:
            split = read_csv(self.split, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError):
            raise self.damaged(self.split, "missing or damaged") from None
        if (
            not {"image", "label", "patient_id", "split"} <= set(split.columns)
            or not (split["split"] == "validation").any()
        ):
            raise self.damaged(
                self.split,
                "damaged (no image, label, patient_id and split columns, or no validation rows)",
            )
        return split

    def load_model(self):  # -> keras.Model; Keras is imported only by the commands that need it
        """The fold's best model, or a DataError when the file is cut or not a Keras model."""
        import keras

        try:
            return keras.models.load_model(self.model, compile=False)
        except Exception as exc:  # zipfile, h5py and Keras raise many types for a damaged file
            raise self.damaged(
                self.model,
                f"unreadable as a Keras model ({type(exc).__name__}: {shorten(str(exc), 200)})",
            ) from None

    def validation_table(self, fold_cfg: Config) -> pd.DataFrame:
        """The fold's validation images, with boxes, lung fields and stored sizes from the dataset's
        labels.csv.

        The fold's own files are checked first (exist, inside the dataset, their stored size), so a
        deleted or replaced image is one clear error rather than TensorFlow's; the other folds'
        images are not read, so each fold of an evaluation costs its own images only.
        """
        validation = self.read_split().query("split == 'validation'")[
            ["image", "label", "patient_id"]
        ]
        labels = read_labels(fold_cfg.data.dataset_dir, check_files=False)
        gone = sorted(set(validation["image"]) - set(labels["image"]))
        if gone:
            raise DataError(
                f"{len(gone)} validation image(s) of fold {self.fold} are no longer in "
                f"{fold_cfg.data.dataset_dir / 'labels.csv'}: {', '.join(gone[:5])}; retrain the "
                "fold or restore them"
            )
        extra = [c for c in IMAGE_COLUMNS if c in labels.columns]
        table = validation.merge(labels[["image", *extra]], on="image", how="left")
        check_image_files(fold_cfg.data.dataset_dir, table, fold_cfg.data.dataset_dir / LABELS_FILE)
        return table.reset_index(drop=True)


def experiment_dir(cfg: Config) -> Path:
    return cfg.experiment.output_dir / cfg.experiment.name


def external_dir(cfg: Config, dataset: str | None = None) -> Path:
    """Where evaluate, explain and audit --on write for another dataset (None: for them all)."""
    root = experiment_dir(cfg) / "external"
    return root if dataset is None else root / dataset


def command_dir(root: Path, command: str, fold: int | None = None) -> Path:
    """root/explain/ or root/audit/ (fold None: over folds), or its fold<K>/; root is the
    experiment's folder, or its external/<dataset>/."""
    return root / command if fold is None else root / command / f"fold{fold}"


def fold_run(cfg: Config, fold: int) -> FoldRun:
    return FoldRun(experiment_dir(cfg) / f"fold{fold}")


def pooled_evaluation_dir(cfg: Config) -> Path:
    return experiment_dir(cfg) / "evaluation"


def staging_run(cfg: Config, fold: int) -> FoldRun:
    """Where a fold trains: `<experiment>/.training/fold<K>/`, moved to `fold<K>/` once it has
    trained."""
    return FoldRun(experiment_dir(cfg) / STAGING / f"fold{fold}")


def lock_path(cfg: Config, fold: int) -> Path:
    """The lock a fold's training holds: beside its staging folder, which training empties."""
    return experiment_dir(cfg) / STAGING / f"fold{fold}.lock"


def fold_name(cfg: Config, fold: int) -> str:
    return f"fold {fold} of experiment {cfg.experiment.name!r}"


def training_lock(cfg: Config, fold: int):  # -> a context manager holding the fold's lock
    """Held while a fold trains: a second train, resume or overwrite of it is refused."""
    return hold(lock_path(cfg, fold), fold_name(cfg, fold))


def folds_in_training(cfg: Config) -> dict[int, str]:
    """Fold -> who trains it, for every fold of the experiment that a process is training now."""
    busy = {}
    for lock in sorted((experiment_dir(cfg) / STAGING).glob("fold*.lock")):
        match = re.fullmatch(r"fold(\d+)\.lock", lock.name)
        if not match:
            continue
        try:
            check_not_training(cfg, int(match.group(1)))
        except DataError as exc:
            busy[int(match.group(1))] = str(exc)
    return busy


def check_not_training(cfg: Config, fold: int) -> None:
    """A DataError naming the process when fold `fold` is being trained right now."""
    check_free(lock_path(cfg, fold), fold_name(cfg, fold))


def finished_staging(cfg: Config, fold: int) -> FoldRun | None:
    """A staged fold whose training ended (its backup removed, its summary written) but that was
    not moved into place: a kill during the final save. None otherwise."""
    staging = staging_run(cfg, fold)
    complete = (
        staging.model.is_file()
        and staging.summary.is_file()
        and staging.config.is_file()
        and not staging.backup.exists()
    )
    return staging if complete else None


def check_run_options(cfg: Config, overwrite: bool = False, resume: bool = False) -> None:
    """Options and output folder of a training, checked before its fold is locked."""
    if overwrite and resume:
        raise ConfigError(
            "--overwrite and --resume contradict each other: --resume continues an interrupted "
            "run, "
            "--overwrite starts the fold again; pick one"
        )
    for folder in (cfg.experiment.output_dir, experiment_dir(cfg)):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(
                f"experiment.output_dir: {folder} is a file, not a folder; name a folder for the "
                "runs"
            )


def check_fold_run(cfg: Config, fold: int, overwrite: bool = False, resume: bool = False) -> None:
    """Can fold `fold` be trained (or resumed) here (its options and output folder were checked
    before it was locked, check_run_options)? Reads only: nothing is changed until training
    starts."""
    final, staging = fold_run(cfg, fold), staging_run(cfg, fold)
    interrupted = staging.backup.is_dir()
    if resume:
        if not interrupted:
            done = (
                "; it finished training (retrain it with --overwrite)"
                if final.model.is_file()
                else "; train without --resume"
            )
            raise DataError(
                f"nothing to resume for fold {fold}: no interrupted training in "
                f"{staging.folder}{done}"
            )
        return
    if interrupted and not overwrite:
        raise DataError(
            f"fold {fold} has an interrupted training in {staging.folder}: "
            "pass --resume to continue it, or --overwrite to start the fold again"
        )
    if final.folder.exists() and any(final.folder.iterdir()) and not overwrite:
        raise DataError(
            f"{final.folder} already holds a trained run; pass --overwrite to replace it "
            "(the old run is kept until the new one has trained)"
        )


def start_staging(cfg: Config, fold: int, resume: bool) -> FoldRun:
    """The staging folder to train in: kept when resuming, else made empty (the finished run is not
    touched)."""
    staging = staging_run(cfg, fold)
    if not resume:
        shutil.rmtree(staging.folder, ignore_errors=True)
    staging.folder.mkdir(parents=True, exist_ok=True)
    return staging


def publish_run(staging: FoldRun, final: FoldRun) -> None:
    """Swap the trained staging folder in for the old run; the old one is removed only after the new
    one is in."""
    if not staging.model.is_file():
        raise DataError(
            f"training of fold {final.fold} saved no checkpoint in {staging.folder} (was the "
            "monitored metric "
            f"ever finite?); the previous run in {final.folder}, if any, is kept"
        )
    old = staging.folder.with_name(staging.folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.folder.exists():
        final.folder.rename(old)
    staging.folder.rename(final.folder)
    shutil.rmtree(old, ignore_errors=True)
    remove_empty_staging(staging)


def remove_empty_staging(staging: FoldRun) -> None:
    with contextlib.suppress(OSError):
        staging.folder.parent.rmdir()  # .training/ when no other fold is training


def open_trained_fold(cfg: Config, fold: int) -> FoldRun:
    """A fold that finished training, or a DataError saying how to train it (or that it is being
    trained right now)."""
    check_not_training(cfg, fold)
    run = fold_run(cfg, fold)
    if not run.model.is_file():
        raise DataError(
            f"fold {fold} of experiment {cfg.experiment.name!r} was never trained (no "
            f"{run.model}); "
            f"run `cxr train --config <config> --fold {fold}` first"
        )
    for path in (run.classes, run.config, run.split):
        if not path.is_file():
            raise run.damaged(path, "missing")
    return run


def trained_folds(cfg: Config) -> list[int]:
    """Folds of this experiment that have a best model, in order."""
    folder = experiment_dir(cfg)
    if not folder.is_dir():
        return []
    found = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"fold(\d+)", p.name))]
    return sorted(f for f in found if (folder / f"fold{f}" / "model.keras").is_file())


def trained_config(cfg: Config) -> Config | None:
    """The saved config of the experiment's first trained fold (None before any is trained)."""
    folds = trained_folds(cfg)
    if not folds:
        return None
    return fold_run(cfg, folds[0]).read_config()
