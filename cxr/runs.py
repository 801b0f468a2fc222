"""The run folder is the interface between commands; this module spells every path in it.

runs/<experiment>/
  fold<K>/   model.keras (best), config.yaml (resolved), classes.json, split.csv,
             history.csv, summary.json, logs/ (TensorBoard), backup/ (while training),
             evaluation/ (predictions.csv, metrics.json, roc.png, confusion.png)
  evaluation/  the same over all evaluated folds, pooled, plus mean and std
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cxr.config import Config
from cxr.errors import CxrError, DataError


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
    summary = property(lambda self: self.folder / "summary.json")
    logs = property(lambda self: self.folder / "logs")
    backup = property(lambda self: self.folder / "backup")
    evaluation = property(lambda self: self.folder / "evaluation")

    def read_classes(self) -> list[str]:
        return json.loads(self.classes.read_text(encoding="utf-8"))


def experiment_dir(cfg: Config) -> Path:
    return cfg.experiment.output_dir / cfg.experiment.name


def fold_run(cfg: Config, fold: int) -> FoldRun:
    return FoldRun(experiment_dir(cfg) / f"fold{fold}")


def pooled_evaluation_dir(cfg: Config) -> Path:
    return experiment_dir(cfg) / "evaluation"


def prepare_fold_run(cfg: Config, fold: int, overwrite: bool = False, resume: bool = False) -> FoldRun:
    """Create the fold's folder; refuse a used one unless overwriting or resuming an interrupted run."""
    run = fold_run(cfg, fold)
    if overwrite and resume:
        raise CxrError("--overwrite and --resume contradict each other: pick one")
    if resume:
        if not run.backup.is_dir():
            raise DataError(f"nothing to resume in {run.folder}: no interrupted training there (train without --resume)")
        return run
    if run.folder.exists() and any(run.folder.iterdir()):
        if not overwrite:
            raise DataError(f"{run.folder} already holds a run; pass --overwrite to replace it or --resume to continue it")
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True, exist_ok=True)
    return run


def open_trained_fold(cfg: Config, fold: int) -> FoldRun:
    """A fold that finished training, or a DataError saying how to train it."""
    run = fold_run(cfg, fold)
    if not run.model.is_file() or not run.classes.is_file():
        raise DataError(
            f"fold {fold} of experiment {cfg.experiment.name!r} was never trained (no {run.model}); "
            f"run `cxr train --config <config> --fold {fold}` first"
        )
    return run


def trained_folds(cfg: Config) -> list[int]:
    """Folds of this experiment that have a best model, in order."""
    folder = experiment_dir(cfg)
    if not folder.is_dir():
        return []
    found = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"fold(\d+)", p.name))]
    return sorted(f for f in found if (folder / f"fold{f}" / "model.keras").is_file())


def write_text_atomic(path: Path, text: str) -> None:
    """Temporary file then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
