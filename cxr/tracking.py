"""Experiment tracking with MLflow (`train.tracking: mlflow`; `pip install 'cxr[mlflow]'`).

Each trained fold is one MLflow run in an MLflow experiment named like the cxr experiment:
params are the fold's resolved config (`section.key`), metrics every epoch's Keras logs (through
MLflow's own Keras callback) and, once evaluated, the fold's metrics with their 95% intervals
(`roc_auc`, `roc_auc_ci_low`, `roc_auc_ci_high`, ...); artifacts the config, history, provenance,
figures and the model card. The run's id is kept in fold<K>/tracking.json, so a resumed training,
`cxr evaluate`, `explain` and `audit` log to the same run.

The store is MLFLOW_TRACKING_URI when set, else a local SQLite store in mlruns/ beside the runs
folder (mlruns/mlflow.db, artifacts in mlruns/artifacts/): MLflow 3 keeps its plain-folder store
in maintenance mode and refuses it by default. TensorBoard's logs are written either way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cxr.atomic import write_json_atomic
from cxr.config import Config
from cxr.errors import ConfigError, shorten
from cxr.runs import (
    EVALUATION_FILES,
    EXPERIMENT_FILES,
    FoldRun,
    experiment_dir,
    fold_run,
    pooled_evaluation_dir,
    trained_folds,
)

log = logging.getLogger(__name__)
INSTALL = "pip install 'cxr[mlflow]'"


def mlflow_module():
    """MLflow, or a one-line error saying how to get it."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            f"train.tracking: mlflow needs MLflow, which is not installed: {INSTALL}, or set "
            "train.tracking: none"
        ) from None
    return mlflow


def store_of(cfg: Config) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): MLFLOW_TRACKING_URI with MLflow's
    own artifact rule, or the local store beside the runs folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], None
    folder = cfg.experiment.output_dir.resolve().parent / "mlruns"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: `section.key` -> its value as text."""
    found = {}
    for section, values in cfg.model_dump(mode="json").items():
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            found[f"{section}.{key}"] = text[:6000]  # MLflow's limit for one value
    return found


def check_tracking(cfg: Config) -> None:
    """Before any training: MLflow is there when asked for, and its store answers (MLflow 3
    refuses a plain-folder MLFLOW_TRACKING_URI, for one)."""
    if cfg.train.tracking != "mlflow":
        return
    mlflow = mlflow_module()
    uri, _ = store_of(cfg)
    try:
        mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(cfg.experiment.name)
    except Exception as exc:  # MLflow raises its own and its backends' errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"train.tracking: mlflow cannot use the store {uri} ({shorten(first)}); set "
            "MLFLOW_TRACKING_URI to a store that works (e.g. sqlite:///mlflow.db) or unset it"
        ) from None


@contextmanager
def tracked_training(cfg: Config, run: FoldRun, fold: int) -> Iterator[list]:
    """Around one fold's fit: the Keras callbacks that log it (none without tracking). Starts the
    fold's MLflow run, or continues the one a resumed training began."""
    if cfg.train.tracking != "mlflow":
        yield []
        return
    mlflow = mlflow_module()
    from mlflow.keras import MlflowCallback

    uri, artifacts = store_of(cfg)
    mlflow.set_tracking_uri(uri)
    name = cfg.experiment.name
    experiment = mlflow.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(name, artifact_location=artifacts)
    )
    before = read_tracking(run)
    with mlflow.start_run(
        run_id=before["run_id"] if before and before["uri"] == uri else None,
        experiment_id=experiment_id,
        run_name=f"fold{fold}",
    ) as active:
        if not before:
            mlflow.log_params(flat_params(cfg))
        write_json_atomic(run.tracking, {"uri": uri, "run_id": active.info.run_id})
        yield [MlflowCallback()]
        mlflow.flush_async_logging()


def read_tracking(run: FoldRun) -> dict | None:
    try:
        return json.loads(run.tracking.read_text())
    except (OSError, ValueError):
        return None


def fold_metrics(metrics: dict) -> dict[str, float]:
    """A fold's evaluation metrics.json as flat MLflow metrics, intervals as _ci_low/_ci_high."""
    found = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    for name, bounds in (metrics.get("ci95") or {}).items():
        if isinstance(bounds, list) and len(bounds) == 2 and None not in bounds:
            found[f"{name}_ci_low"], found[f"{name}_ci_high"] = map(float, bounds)
    calibration = metrics.get("calibration") or {}
    for name in ("ece", "brier"):
        if isinstance(calibration.get(name), int | float):
            found[name] = float(calibration[name])
    return found


def sync(cfg: Config) -> None:
    """Log what each tracked fold has now (its evaluation's metrics and the figures, the
    config, history, provenance and the model card) to its MLflow run; called when the model
    card is written. Folds trained without tracking are left alone."""
    folds = [(k, read_tracking(fold_run(cfg, k))) for k in trained_folds(cfg)]
    folds = [(k, found) for k, found in folds if found]
    if not folds:
        return
    try:
        send(cfg, folds)
    except Exception as exc:  # the run's own files are written: a store gone wrong only warns
        log.warning("could not log to MLflow (%s): %s", type(exc).__name__, shorten(str(exc)))


def send(cfg: Config, folds: list[tuple[int, dict]]) -> None:
    mlflow = mlflow_module()
    root = experiment_dir(cfg)
    shared = [root / EXPERIMENT_FILES.card, root / EXPERIMENT_FILES.card_page]
    shared += sorted(pooled_evaluation_dir(cfg).glob("*.png"))
    for fold, found in folds:
        run = fold_run(cfg, fold)
        client = mlflow.MlflowClient(tracking_uri=found["uri"])
        metrics_file = run.evaluation / EVALUATION_FILES.metrics
        if metrics_file.is_file():
            values = fold_metrics(json.loads(metrics_file.read_text()))
            for name, value in values.items():
                client.log_metric(found["run_id"], f"eval_{name}", value)
        own = [run.config, run.history, run.history_figure, run.provenance, run.summary]
        own += sorted(run.evaluation.glob("*.png"))
        for path in own:
            if path.is_file():
                client.log_artifact(found["run_id"], str(path), artifact_path=f"fold{fold}")
        for path in shared:
            if path.is_file():
                client.log_artifact(found["run_id"], str(path))


def log_training(run: FoldRun, best_epoch: int, best_value: float, monitor: str) -> None:
    """At the end of a tracked fit (inside `tracked_training`): the best epoch and value."""
    mlflow = mlflow_module()
    mlflow.log_metrics({f"best_{monitor}": best_value, "best_epoch": float(best_epoch)})
    for path in (run.config, run.history, run.history_figure, run.provenance):
        if Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=run.folder.name)
