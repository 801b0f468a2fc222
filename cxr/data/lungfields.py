"""An image's lung fields from labels.csv (its `lungs` boxes or its `lung_mask` file), and the
part of a film the lungs and the mediastinum cover: what `data.outside_lungs` keeps.

The kept region of each row of pixels runs from the leftmost to the rightmost lung pixel of that
row (so the heart and mediastinum between the lungs stay), widened by a small margin; rows
without lung are not kept. `data.outside_lungs` fills the rest with the image's mean, blurs it
heavily, or keeps it (the default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr.data.images import read_image
from cxr.data.labels import box_mask, decode_boxes
from cxr.errors import DataError

MARGIN = 0.02  # of the image's side, added left and right of each row's lungs
BLUR_SIGMA = 0.05  # of the image's side: `blur` leaves no detail a tag could be read from


def lung_region(dataset_dir: Path, row: dict, shape: tuple[int, int]) -> np.ndarray | None:
    """One image's lung fields as a boolean mask at `shape`; None when unknown or implausible."""
    boxes = decode_boxes(row.get("lungs", ""))
    if boxes:
        return box_mask(shape, boxes)
    path = str(row.get("lung_mask", "") or "")
    if not path or str(row.get("lung_mask_plausible", "1")) in ("0", "0.0", "False"):
        return None
    mask = read_image(dataset_dir / path) > 127
    if mask.shape != shape:
        mask = np.asarray(Image.fromarray(mask).resize(shape[::-1], Image.Resampling.NEAREST))
    return mask


def kept_spans(lungs: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """(H, 2) int32: for each row, [start, stop) of the pixels kept (start = stop: none)."""
    height, width = lungs.shape
    pad = round(margin * width)
    spans = np.zeros((height, 2), dtype=np.int32)
    rows = np.nonzero(lungs.any(axis=1))[0]
    left = lungs[rows].argmax(axis=1)
    right = width - lungs[rows, ::-1].argmax(axis=1)
    spans[rows, 0] = np.maximum(left - pad, 0)
    spans[rows, 1] = np.minimum(right + pad, width)
    return spans


def spans_mask(spans: np.ndarray, width: int) -> np.ndarray:
    """The (H, W) boolean mask of `kept_spans`."""
    columns = np.arange(width)
    return (columns >= spans[:, :1]) & (columns < spans[:, 1:])


def table_spans(dataset_dir: Path, table: pd.DataFrame, size: int) -> tuple[np.ndarray, int]:
    """(N, size, 2) kept spans of every image at the model's input size, and how many images
    have no plausible lung fields (their whole film is kept). Refuses a table without any lung
    fields: a model trained without what lies outside them must not be shown it."""
    if not {"lungs", "lung_mask"} & set(table.columns):
        raise DataError(
            f"{dataset_dir.name} has no lung fields and data.outside_lungs needs them: run "
            f"`cxr lungs {dataset_dir.name}` (or give a lungs or lung_mask column)"
        )
    spans = np.zeros((len(table), size, 2), dtype=np.int32)
    unknown = 0
    for i, row in enumerate(table.to_dict("records")):
        lungs = lung_region(dataset_dir, row, (size, size))
        if lungs is None or not lungs.any():
            spans[i, :, 1] = size
            unknown += 1
        else:
            spans[i] = kept_spans(lungs)
    return spans, unknown
