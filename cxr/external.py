"""External validation: a trained experiment's fold models on another dataset, without retraining.

The other dataset is any folder in the standard layout under the data root (`cxr download ...`).
Its images are read at the size and channels the models were trained with; its class names must be
the models' own, or be renamed to them (`--map pneumonia_like=pneumonia`). Every output goes to
runs/<experiment>/external/<dataset>/, beside nothing of the experiment's own.

Why only another dataset gets a fold ensemble: on the experiment's own data each image trained every
fold model but one, so an ensemble's metrics there would not be out-of-fold.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.config import Config
from cxr.data.labels import IMAGE_COLUMNS, LABEL_SEPARATOR, LABELS_FILE, read_labels, split_labels
from cxr.data.sources import check_dataset_name
from cxr.errors import ConfigError, DataError
from cxr.runs import external_dir

log = logging.getLogger(__name__)
_CHECKED: set[tuple[Path, Path]] = set()  # (own, external) pairs already compared in this process


def file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def identical_images(own: Path, other: Path) -> tuple[int, int]:
    """How many of `other`'s images are byte-identical to an image of `own`, and how many it has.
    Files are compared by size first, and only files of a size both hold are read and digested."""
    by_size: dict[int, list[Path]] = defaultdict(list)
    for image in read_labels(own, check_files=False)["image"]:
        if (own / image).is_file():
            by_size[(own / image).stat().st_size].append(own / image)
    theirs = [other / image for image in read_labels(other, check_files=False)["image"]]
    candidates = [p for p in theirs if p.is_file() and p.stat().st_size in by_size]
    sizes = {p.stat().st_size for p in candidates}
    digests = {file_digest(p) for size in sizes for p in by_size[size]}
    return sum(file_digest(p) in digests for p in candidates), len(theirs)


def warn_identical_images(own: Path, other: Path, name: str) -> None:
    """A copy of the training data is no external validation: say how many images are copies."""
    pair = (own.resolve(), other.resolve())
    if pair in _CHECKED:
        return
    _CHECKED.add(pair)
    same, total = identical_images(own, other)
    if same:
        log.warning(
            "%d of %d images of %s are byte-identical to images of the experiment's own dataset "
            "%s: those are not external (the models trained or were tuned on them); validate on "
            "images of another source",
            same,
            total,
            name,
            own,
        )


def parse_renames(items: list[str] | None) -> dict[str, str]:
    """['theirs=ours', ...] -> {'theirs': 'ours'}; a malformed item is a ConfigError."""
    renames: dict[str, str] = {}
    for item in items or []:
        theirs, sep, ours = (part.strip() for part in item.partition("="))
        if not sep or not theirs or not ours or "=" in ours:
            raise ConfigError(
                f"--map {item!r}: expected THEIR_CLASS=MODEL_CLASS, e.g. --map opacity=pneumonia"
            )
        renames[theirs] = ours
    return renames


@dataclass(frozen=True)
class External:
    """Another dataset a trained experiment is run on."""

    name: str
    dataset_dir: Path
    folder: Path  # runs/<experiment>/external/<name>/
    renames: dict[str, str]

    def settings(self, fold_cfg: Config) -> Config:
        """A fold's settings (FoldRun.settings) reading this dataset instead of its own."""
        if fold_cfg.data.dataset_dir.resolve() == self.dataset_dir.resolve():
            raise ConfigError(
                f"--on {self.name}: that is the dataset the experiment was trained on; its "
                "out-of-fold figures come from `cxr evaluate` without --on (on it, every image "
                "trained all fold models but one, so they would not be external)"
            )
        warn_identical_images(fold_cfg.data.dataset_dir, self.dataset_dir, self.name)
        data = fold_cfg.data.model_copy(
            update={"root": self.dataset_dir.parent, "dataset": self.dataset_dir.name}
        )
        return fold_cfg.model_copy(update={"data": data})

    def table(self, classes: list[str], multi_label: bool) -> pd.DataFrame:
        """Every image of the dataset (checked like training data), its labels in the model's
        class names; a class the model does not know is an error naming it."""
        labels = read_labels(self.dataset_dir)

        def split(text: str) -> list[str]:
            return split_labels(text) if multi_label else [text]

        theirs = {c for text in labels["label"] for c in split(text)}
        unknown = {f"{k}={v}": v for k, v in self.renames.items() if v not in classes}
        if unknown:
            item, target = next(iter(unknown.items()))
            raise ConfigError(
                f"--map {item}: {target} is not a class of the model (its classes: "
                f"{', '.join(classes)}); map each class of {self.name} to one of those"
            )
        unused = sorted(set(self.renames) - theirs)
        if unused:
            raise ConfigError(
                f"--map names {', '.join(unused)}, not a class of {self.dataset_dir} (its "
                f"classes: {', '.join(sorted(theirs))})"
            )
        renamed = labels["label"].map(
            lambda t: LABEL_SEPARATOR.join(self.renames.get(c, c) for c in split(t))
        )
        strangers = sorted({c for t in renamed for c in split(t)} - set(classes))
        if strangers:
            raise DataError(
                f"{self.dataset_dir} has classes the model does not know: {', '.join(strangers)} "
                f"(the model's: {', '.join(classes)}); rename them with --map "
                f"{strangers[0]}=<a model class>"
            )
        extra = [c for c in IMAGE_COLUMNS if c in labels.columns]
        return labels.assign(label=renamed)[["image", "label", "patient_id", *extra]]


def open_external(cfg: Config, on: str, renames: list[str] | None = None) -> External:
    """The dataset `on`: a folder path (with a '/'), else a dataset name under the data root; for
    the experiment `cfg` names."""
    if "/" in on or on in (".", ".."):
        dataset_dir = Path(on)
    else:
        dataset_dir = cfg.data.root / check_dataset_name(on, "--on")
    if not (dataset_dir / LABELS_FILE).is_file():
        raise DataError(
            f"--on {on}: no dataset in {dataset_dir} (no labels.csv); make one in the standard "
            f"layout first with `cxr download ... --name NAME` (a name is looked up under "
            f"data.root = {cfg.data.root}; a path with '/' is taken as it is)"
        )
    name = dataset_dir.resolve().name
    folder = external_dir(cfg, name)
    return External(name, dataset_dir, folder, parse_renames(renames))
