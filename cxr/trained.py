"""TrainedFold.open(cfg, fold, on=None): the one way evaluate, explain, audit, fold agreement and
external validation open a trained fold.

It applies the one settings rule (config.FIXED_BY_RUN: what the model was trained with comes from
the fold's own config.yaml, what describes the analysis from the command line's config), reads the
fold's classes, chooses the positive class and the explanation layer once, and knows which images
the command goes through (the fold's validation images, or every image of the --on dataset) and
where it writes. A fold that is training right now is refused here (cxr.runs.open_trained_fold).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.catalogs.models import get_model_spec
from cxr.config import Config
from cxr.data.labels import choose_positive_class
from cxr.external import External
from cxr.lungs.run import compute_lungs, has_lung_fields
from cxr.runs import FoldRun, command_dir, experiment_dir, open_trained_fold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedFold:
    run: FoldRun
    settings: Config  # the fold's settings under the one rule, reading the --on dataset if any
    classes: list[str]
    positive: int | None  # a binary task's positive class (index); None for other tasks
    layer: str  # the explanation layer: --layer, else explain.layer, else the model's own
    output: Path  # runs/<experiment>/, or its external/<dataset>/ with --on
    on: External | None = None

    @classmethod
    def open(
        cls, cfg: Config, fold: int, on: External | None = None, layer: str | None = None
    ) -> TrainedFold:
        run = open_trained_fold(cfg, fold)
        settings = run.settings(cfg)
        if on is not None:
            settings = on.settings(settings)
        classes = run.read_classes()
        positive = (
            None
            if settings.data.multi_label
            else choose_positive_class(classes, settings.data.positive_class)
        )
        layer = layer or settings.explain.layer or get_model_spec(settings.model.name).explain_layer
        output = experiment_dir(cfg) if on is None else on.folder
        return cls(run, settings, classes, positive, layer, output, on)

    @property
    def fold(self) -> int:
        return self.run.fold

    @property
    def batch_size(self) -> int:
        """Images per batch of every pass of this fold's model (explain.batch_size)."""
        return self.settings.explain.batch_size

    def folder(self, command: str) -> Path:
        """Where `command` (explain, audit) writes for this fold."""
        return command_dir(self.output, command, self.fold)

    def table(self, lungs: bool = False) -> pd.DataFrame:
        """The images the command goes through: the fold's validation images, or every image of
        the --on dataset (its classes renamed to the model's). Their lung fields are computed
        first where missing (by the shipped model, as `cxr lungs` does, for these images only)
        when `lungs` (the audit) or when the model reads its images through them (data.crop,
        data.outside_lungs): a cropped model can be validated on another hospital's films as
        they come."""
        table = self.read_table()
        if not (lungs or self.settings.data.needs_lungs):
            return table
        dataset_dir, images = self.settings.data.dataset_dir, set(table["image"])
        if has_lung_fields(dataset_dir, images):
            return table
        log.info(
            "%s has no lung fields yet for the %d image(s) used here: computing them (as `cxr "
            "lungs` does for every image)",
            dataset_dir,
            len(images),
        )
        compute_lungs(dataset_dir, images=images)
        return self.read_table()  # now with their lung fields

    def read_table(self) -> pd.DataFrame:
        if self.on is None:
            return self.run.validation_table(self.settings)
        return self.on.table(self.classes, self.settings.data.multi_label)
