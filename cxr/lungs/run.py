"""compute_lungs(dataset): lung masks for every image of a dataset in the standard layout.

Writes `lungs/<image path>.png` (0/255 at the stored size) under the dataset folder and three
columns of labels.csv: `lung_mask` (that path), `lung_mask_plausible` (1/0) and `lung_mask_problem`
(why not). Lung fields the dataset already has take precedence and are never overwritten: boxes in
the `lungs` column (the synthetic phantoms', or a user's) and a user's own masks (a `lung_mask`
outside `lungs/`). A rerun skips images whose mask exists, unless `overwrite`: also the masks of a
run stopped before it wrote labels.csv (each mask file is written whole, then renamed), which are
read back and checked again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from cxr.data.images import read_image, write_png
from cxr.data.labels import (
    LABELS_FILE,
    decode_boxes,
    read_labels,
    shown_list,
)
from cxr.data.plausible import mask_problem
from cxr.errors import DataError, shorten
from cxr.tables import read_csv, write_csv

log = logging.getLogger(__name__)
WORKERS = max(2, min(8, os.cpu_count() or 2))  # decoding and PNG writing beside the model
MASK_FOLDER = "lungs"
COLUMNS = ("lung_mask", "lung_mask_plausible", "lung_mask_problem")


@dataclass(frozen=True)
class LungsResult:
    computed: int
    skipped: int  # already done, or lung fields of the dataset's own
    implausible: list[str]
    unreadable: list[str]  # skipped: no mask, listed in lung_mask_problem
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


def check_writable(dataset_dir: Path) -> None:
    """Refuse, before any work, a dataset whose lung fields cannot be written (every caller:
    `cxr lungs`, the audit, training with data.outside_lungs), saying what to do instead."""
    if not os.access(dataset_dir, os.W_OK) or not os.access(dataset_dir / LABELS_FILE, os.W_OK):
        raise DataError(
            f"{dataset_dir} has no lung fields and is read-only here, so cxr cannot add them: "
            f"copy the dataset somewhere writable and run `cxr lungs {dataset_dir.name} --dest "
            "<that folder>` (or give its lung fields as a lungs or lung_mask column of "
            "labels.csv), then use that copy"
        )


def has_lung_fields(dataset_dir: Path, images: set[str] | None = None) -> bool:
    """Does every image (of `images`, when given) have lung fields already (its own, or
    computed)?"""
    table = read_labels(dataset_dir, check_files=False)  # its box columns come back re-encoded
    if images is not None:
        table = table[table["image"].isin(images)]
    none = pd.Series("", index=table.index)
    boxes = table.get("lungs", none).ne("[]") & table.get("lungs", none).ne("")
    masks = table.get("lung_mask", none).fillna("").astype(str).ne("")
    return bool((boxes | masks).all())


def compute_lungs(
    dataset_dir: Path,
    overwrite: bool = False,
    batch_size: int = 16,
    progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
    images: set[str] | None = None,
) -> LungsResult:
    """Predict, check and write the masks batch by batch, then labels.csv once (atomically);
    only for `images` when given (the audit of one fold needs that fold's)."""
    from cxr.lungs.model import load_lung_model, predict_masks

    read_labels(dataset_dir)  # validates the table and that every image is there
    # rewritten as it is, plus columns
    raw = read_csv(dataset_dir / LABELS_FILE, dtype=str, keep_default_na=False)
    for column in COLUMNS:
        if column not in raw.columns:
            raw[column] = ""
    todo = [
        i
        for i, row in raw.iterrows()
        if (images is None or row["image"] in images) and needs_mask(row, dataset_dir, overwrite)
    ]
    found = (
        []
        if overwrite
        else [i for i in todo if (dataset_dir / mask_path(raw.at[i, "image"])).is_file()]
    )
    for i in found:  # written by a run that was stopped before it wrote labels.csv: kept
        relative = mask_path(raw.at[i, "image"])
        problem = mask_problem(read_image(dataset_dir / relative) > 127)
        raw.loc[i, COLUMNS] = [relative, "0" if problem else "1", problem]
    todo = sorted(set(todo) - set(found))
    if todo:
        check_writable(dataset_dir)
    model = load_lung_model() if todo else None
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    unreadable: list[str] = []

    def read_one(i: int) -> tuple[int, np.ndarray | None, str]:
        try:
            return i, read_image(dataset_dir / raw.at[i, "image"]), ""
        except DataError as exc:  # skipped and listed, never a half-done run
            return i, None, shorten(str(exc), 150)

    def write_one(i: int, mask: np.ndarray) -> tuple[int, str, str]:
        relative = mask_path(raw.at[i, "image"])
        write_png(mask.astype(np.uint8) * 255, dataset_dir / relative)
        return i, relative, mask_problem(mask)

    # decoding the next batch, and writing and checking the last one's masks, overlap with the
    # model (PNG coding releases the GIL), as explain's overlays do
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        reads = [pool.submit(read_one, i) for i in batches[0]] if batches else []
        writes = []
        steps = range(len(batches))
        for k in progress(steps, len(steps)) if progress else steps:
            done = [future.result() for future in reads]
            if k + 1 < len(batches):
                reads = [pool.submit(read_one, i) for i in batches[k + 1]]
            for i, _, problem in done:
                if problem:
                    raw.loc[i, COLUMNS] = ["", "0", f"unreadable image ({problem})"]
                    unreadable.append(raw.at[i, "image"])
            good = [(i, image) for i, image, problem in done if not problem]
            masks = predict_masks(model, [image for _, image in good]) if good else []
            writes += [
                pool.submit(write_one, i, mask) for (i, _), mask in zip(good, masks, strict=True)
            ]
        for future in writes:
            i, relative, problem = future.result()
            raw.loc[i, COLUMNS] = [relative, "0" if problem else "1", problem]
    if todo or found:
        write_csv(raw, dataset_dir / LABELS_FILE)
    ours = raw["lung_mask"].str.startswith(f"{MASK_FOLDER}/")
    implausible = raw.loc[ours & (raw["lung_mask_plausible"] == "0"), "image"].tolist()
    if unreadable:
        log.warning(
            "%d image(s) could not be read and have no lung mask: %s",
            len(unreadable),
            shown_list(unreadable),
        )
    if implausible:
        log.warning(
            "%d lung mask(s) look implausible and are left out of the lung statistics: %s",
            len(implausible),
            shown_list(implausible),
        )
    computed = len(todo) - len(unreadable)
    return LungsResult(computed, len(raw) - len(todo), implausible, unreadable, raw)
