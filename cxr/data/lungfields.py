"""An image's lung fields from labels.csv (its `lungs` boxes or its `lung_mask` file), and what
the data settings that use them do: `data.outside_lungs` and `data.crop: lungs`.

The kept region of each row of pixels runs from the leftmost to the rightmost lung pixel of that
row (so the heart and mediastinum between the lungs stay), widened by a small margin; rows
without lung are not kept. `data.outside_lungs` fills the rest with the image's mean, blurs it
heavily, or keeps it (the default).

`data.crop: lungs` crops each film to the bounding box of its lung fields in the stored image's
pixels, widened by `data.crop_margin` of the film's side on every side and clipped to the film;
the pipeline resizes the crop to `data.image_size` (the aspect is not kept, as in the
lung-cropping literature). A film without plausible lung fields is not cropped. Everything drawn
or judged on the film (overlays, peaks, boxes, the audit's regions) stays in the stored image's
pixels: maps go back onto the film (cxr.explain.overlay.place_map), films and masks go to the
input with `to_input`; with both settings the kept spans are those of the lungs in the crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from cxr.config import DataConfig
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


def check_lung_fields(dataset_dir: Path, table: pd.DataFrame, setting: str) -> None:
    """Refuse a table without any lung fields: a model trained with `setting` must not be shown
    films it was not trained on."""
    if not {"lungs", "lung_mask"} & set(table.columns):
        raise DataError(
            f"{dataset_dir.name} has no lung fields and {setting} needs them: run "
            f"`cxr lungs {dataset_dir.name}` (or give a lungs or lung_mask column)"
        )


@dataclass(frozen=True)
class LungInputs:
    """What a table's lung fields give the pipeline, read once per image."""

    boxes: np.ndarray | None  # (N, 4) int32 crop boxes (top, left, height, width): data.crop
    spans: np.ndarray | None  # (N, size, 2) int32 kept spans at the input: data.outside_lungs
    unknown: int  # images without plausible lung fields: their whole film is kept


def lung_inputs(
    dataset_dir: Path,
    table: pd.DataFrame,
    size: int,
    crop_margin: float | None = None,
    outside: bool = False,
) -> LungInputs:
    """Each image's crop box (with `crop_margin`) and the spans kept at the model's input size
    (with `outside`: in the crop when there is one), from one read of its lung fields."""
    check_lung_fields(
        dataset_dir, table, "data.outside_lungs" if crop_margin is None else "data.crop"
    )
    boxes = None if crop_margin is None else np.zeros((len(table), 4), dtype=np.int32)
    spans = np.zeros((len(table), size, 2), dtype=np.int32) if outside else None
    unknown = 0
    for i, row in enumerate(table.to_dict("records")):
        if boxes is None:
            lungs = lung_region(dataset_dir, row, (size, size))
            known = lungs is not None and bool(lungs.any())
        else:
            box, film = film_crop(dataset_dir, row, crop_margin)
            boxes[i] = box
            known = film is not None
            lungs = to_input(film, box, size) if known and spans is not None else None
        unknown += not known
        if spans is not None:
            if known and lungs.any():
                spans[i] = kept_spans(lungs)
            else:
                spans[i, :, 1] = size
    return LungInputs(boxes, spans, unknown)


class CropBox(NamedTuple):
    """A part of the stored film, in its pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def region(self) -> tuple[slice, slice]:
        """The film's pixels inside the box: film[box.region]."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def whole_film(shape: tuple[int, int]) -> CropBox:
    return CropBox(0, 0, shape[0], shape[1])


def crop_box(lungs: np.ndarray, margin: float) -> CropBox:
    """The lungs' bounding box widened by `margin` of each side of the film, clipped to it; the
    whole film when `lungs` is empty."""
    height, width = lungs.shape
    rows, cols = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
    if not len(rows):
        return whole_film(lungs.shape)
    dy, dx = round(margin * height), round(margin * width)
    top, left = max(int(rows[0]) - dy, 0), max(int(cols[0]) - dx, 0)
    bottom, right = min(int(rows[-1]) + 1 + dy, height), min(int(cols[-1]) + 1 + dx, width)
    return CropBox(top, left, bottom - top, right - left)


def seen_box(lungs: np.ndarray | None, data: DataConfig) -> CropBox | None:
    """The part of the stored film a model trained with `data` sees: its lungs' crop box with
    data.crop: lungs, else None (the whole film: no crop, or no plausible lung fields)."""
    if data.crop != "lungs" or lungs is None or not lungs.any():
        return None
    return crop_box(lungs, data.crop_margin)


def stored_size(dataset_dir: Path, row: dict) -> tuple[int, int]:
    """(height, width) of the stored image: from labels.csv, else the file's header (no decode)."""
    width, height = row.get("width"), row.get("height")
    if pd.notna(width) and pd.notna(height) and str(width) and str(height):
        return int(float(height)), int(float(width))
    with Image.open(dataset_dir / row["image"]) as image:
        return image.size[::-1]


def file_size(dataset_dir: Path, row: dict) -> tuple[int, int]:
    """(height, width) of the image file itself (its header, no decode), refusing a labels.csv
    whose width and height say otherwise: a crop box must fit the film the pipeline decodes."""
    with Image.open(dataset_dir / row["image"]) as image:
        shape = image.size[::-1]
    said = stored_size(dataset_dir, row)
    if said != shape:
        raise DataError(
            f"{row['image']} is {shape[1]} x {shape[0]} px but labels.csv says {said[1]} x "
            f"{said[0]} (width x height): correct its width and height columns, or make the "
            "dataset again with --overwrite"
        )
    return shape


def film_crop(dataset_dir: Path, row: dict, margin: float) -> tuple[CropBox, np.ndarray | None]:
    """One image's crop box and its lung fields at the stored size (None: unknown or implausible,
    and the box is the whole film)."""
    shape = file_size(dataset_dir, row)
    lungs = lung_region(dataset_dir, row, shape)
    if lungs is None or not lungs.any():
        return whole_film(shape), None
    return crop_box(lungs, margin), lungs


def to_input(film: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """A film-sized mask or label array (bool or integer) as the model sees it: cropped to `box`,
    resized to (size, size) by nearest neighbour."""
    part = film[box.region]
    if part.shape == (size, size):
        return part.copy()
    dtype = part.dtype
    resized = Image.fromarray(part.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized).astype(dtype)
