"""compute_lungs(dataset): lung masks for every image of a dataset in the standard layout.

Writes `lungs/<image path>.png` (0/255 at the stored size) under the dataset folder and three
columns of labels.csv: `lung_mask` (that path), `lung_mask_plausible` (1/0) and `lung_mask_problem`
(why not). Lung fields the dataset already has take precedence and are never overwritten: boxes in
the `lungs` column (the synthetic phantoms', or a user's) and a user's own masks (a `lung_mask`
outside `lungs/`). A rerun skips images whose mask exists, unless `overwrite`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cxr.data.images import read_image, write_png
from cxr.data.labels import LABELS_FILE, decode_boxes, read_labels, shown_list, write_csv_atomic
from cxr.errors import DataError
from cxr.lungs.plausible import mask_problem

log = logging.getLogger(__name__)
MASK_FOLDER = "lungs"
COLUMNS = ("lung_mask", "lung_mask_plausible", "lung_mask_problem")


@dataclass(frozen=True)
class LungsResult:
    computed: int
    skipped: int  # already done, or lung fields of the dataset's own
    implausible: list[str]
    table: pd.DataFrame


def mask_path(image: str) -> str:
    """Where an image's computed mask lives, relative to the dataset folder."""
    return str(PurePosixPath(MASK_FOLDER) / PurePosixPath(image).with_suffix(".png"))


def own_lung_fields(row: pd.Series) -> bool:
    """Boxes in `lungs`, or a mask the user placed (not one of ours under lungs/)."""
    if decode_boxes(row.get("lungs", "")):
        return True
    mask = str(row.get("lung_mask", "") or "")
    return bool(mask) and not mask.startswith(f"{MASK_FOLDER}/")


def needs_mask(row: pd.Series, dataset_dir: Path, overwrite: bool) -> bool:
    """No lung fields of its own, and no computed mask yet (or `overwrite`)."""
    if own_lung_fields(row):
        return False
    return overwrite or not row["lung_mask"] or not (dataset_dir / row["lung_mask"]).is_file()


def has_lung_fields(dataset_dir: Path) -> bool:
    """Does every image have lung fields already (its own, or computed)?"""
    table = read_labels(dataset_dir, check_files=False)
    return all(
        own_lung_fields(row) or bool(str(row.get("lung_mask", "") or ""))
        for _, row in table.iterrows()
    )


def compute_lungs(
    dataset_dir: Path,
    overwrite: bool = False,
    batch_size: int = 16,
    progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
) -> LungsResult:
    """Predict, check and write the masks batch by batch, then labels.csv once (atomically)."""
    from cxr.lungs.model import load_lung_model, predict_masks

    read_labels(dataset_dir)  # validates the table and that every image is there
    # rewritten as it is, plus columns
    raw = pd.read_csv(dataset_dir / LABELS_FILE, dtype=str, keep_default_na=False)
    for column in COLUMNS:
        if column not in raw.columns:
            raw[column] = ""
    todo = [i for i, row in raw.iterrows() if needs_mask(row, dataset_dir, overwrite)]
    model = load_lung_model() if todo else None
    starts = range(0, len(todo), batch_size)
    for start in progress(starts, len(starts)) if progress else starts:
        rows = todo[start : start + batch_size]
        images = [read_image(dataset_dir / raw.at[i, "image"]) for i in rows]
        for i, mask in zip(rows, predict_masks(model, images), strict=True):
            relative = mask_path(raw.at[i, "image"])
            write_png(mask.astype(np.uint8) * 255, dataset_dir / relative)
            problem = mask_problem(mask)
            raw.loc[i, COLUMNS] = [relative, "0" if problem else "1", problem]
    if todo:
        write_csv_atomic(raw, dataset_dir / LABELS_FILE)
    ours = raw["lung_mask"].str.startswith(f"{MASK_FOLDER}/")
    implausible = raw.loc[ours & (raw["lung_mask_plausible"] == "0"), "image"].tolist()
    if implausible:
        log.warning(
            "%d lung mask(s) look implausible and are left out of the lung statistics: %s",
            len(implausible),
            shown_list(implausible),
        )
    if not len(raw):
        raise DataError(f"{dataset_dir}: no images")
    return LungsResult(len(todo), len(raw) - len(todo), implausible, raw)


def lung_region(dataset_dir: Path, row: dict, shape: tuple[int, int]) -> np.ndarray | None:
    """One image's lung fields as a boolean mask at `shape`; None when unknown or implausible."""
    boxes = decode_boxes(row.get("lungs", ""))
    if boxes:
        from cxr.data.labels import box_mask

        return box_mask(shape, boxes)
    path = str(row.get("lung_mask", "") or "")
    if not path or str(row.get("lung_mask_plausible", "1")) in ("0", "0.0", "False"):
        return None
    mask = read_image(dataset_dir / path) > 127
    if mask.shape != shape:
        from PIL import Image

        mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.Resampling.NEAREST))
    return mask
