"""The one canonical table every source converts into: `labels.csv`.

Columns: image (path relative to the dataset folder), label (class name, or a
`|`-joined list for multi-label), patient_id, fold, boxes (JSON list of
{"x", "y", "w", "h", "label"} in pixels of the stored image), width, height;
sources may add more (e.g. findings, view).
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from cxr.catalogs.sources import SOURCE_NAMES
from cxr.errors import DataError, shorten
from cxr.tables import read_csv

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
SKIPPED_FILE = "skipped.csv"
REQUIRED_COLUMNS = ("image", "label", "patient_id", "fold")
LABEL_SEPARATOR = "|"
# what explain and audit read of each image beside its label: annotations and the stored size
IMAGE_COLUMNS = ("boxes", "width", "height", "lungs", "lung_mask", "lung_mask_plausible")


@dataclass(frozen=True)
class Box:
    """A finding's box in pixels of the stored image."""

    x: float
    y: float
    w: float
    h: float
    label: str = ""

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x * sx, self.y * sy, self.w * sx, self.h * sy, self.label)


def encode_boxes(boxes: list[Box]) -> str:
    return json.dumps(
        [
            # vars, not asdict: the fields are plain values, and asdict's deep copy was most of
            # the cost of reading a labels file with boxes
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in vars(b).items()}
            for b in boxes
        ]
    )


def decode_boxes(text: object) -> list[Box]:
    """Parse the `boxes` column; an empty cell means no boxes."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or str(text).strip() == "":
        return []
    return [Box(**item) for item in json.loads(str(text))]


# names a source's box list gives findings that its labels spell otherwise (NIH's BBox_List_2017.csv
# against Data_Entry_2017.csv): the converters write the labels' name, and boxes_for also reads
# datasets converted before they did
BOX_FINDING_NAMES = {"Infiltrate": "Infiltration"}


def boxes_for(boxes: list[Box], finding: str) -> list[Box]:
    """The boxes drawn around `finding`: a multi-label model's map of one finding is judged against
    that finding's boxes, not those of another finding on the same film."""
    return [b for b in boxes if BOX_FINDING_NAMES.get(b.label, b.label) == finding]


def box_mask(shape: tuple[int, int], boxes: list[Box]) -> np.ndarray:
    """Pixels covered by any box (pixel (x, y) is inside when x0 <= x < x0 + w); parts outside the
    image count not."""
    mask = np.zeros(shape, dtype=bool)
    height, width = shape
    for b in boxes:
        # clipped: a negative end never wraps
        y0, y1 = (min(max(round(v), 0), height) for v in (b.y, b.y + b.h))
        x0, x1 = (min(max(round(v), 0), width) for v in (b.x, b.x + b.w))
        mask[y0:y1, x0:x1] = True
    return mask


MAX_BOX_VALUE = 10 * 16384  # pixels: ten times the largest image side cxr reads


def clean_boxes(text: object, width: float, height: float, where: str) -> tuple[list[Box], int]:
    """Boxes of one cell, clipped to the image; returns them and how many were empty after clipping.

    A value that is not a finite number (NaN, Infinity, a string) is a DataError naming `where`.
    """
    try:
        items = (
            []
            if text is None or (isinstance(text, float) and pd.isna(text)) or not str(text).strip()
            else json.loads(str(text))
        )
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValueError("expected a JSON list of {x, y, w, h, label} objects")
        boxes = [Box(**item) for item in items]
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{where}: bad boxes value {shorten(repr(text), 200)} ({shorten(str(exc), 200)})"
        ) from None
    kept, empty = [], 0
    for box in boxes:
        values = (box.x, box.y, box.w, box.h)
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        ):
            raise DataError(
                f"{where}: box {shorten(repr(values), 200)} has a value that is not a finite "
                "number; "
                "x, y, w and h must be numbers of pixels"
            )
        if any(abs(v) > MAX_BOX_VALUE for v in values):
            raise DataError(
                f"{where}: box {shorten(repr(values), 200)} has a value beyond "
                f"{MAX_BOX_VALUE:,} pixels; x, y, w and h must be pixels of the image"
            )
        if box.w <= 0 or box.h <= 0:
            raise DataError(
                f"{where}: box {shorten(repr(values), 200)} has no area (w {box.w:g}, h "
                f"{box.h:g}); w and h must be positive: x, y is the top-left corner"
            )
        x0, y0 = min(max(box.x, 0.0), width), min(max(box.y, 0.0), height)
        x1, y1 = min(max(box.x + box.w, 0.0), width), min(max(box.y + box.h, 0.0), height)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            empty += 1
            continue
        kept.append(Box(float(x0), float(y0), float(x1 - x0), float(y1 - y0), str(box.label)))
    return kept, empty


def known_patients(ids: pd.Series) -> pd.Series:
    """Patient ids as text, "" where missing: empty, NaN, or a word for nothing (`is_missing`)."""
    # "" for a gap, whatever the column's dtype (filling a float column with text is deprecated)
    named = ids.astype(str).str.strip().where(ids.notna(), "")
    return named.where(~named.str.lower().isin(MISSING_WORDS), "")


def patient_keys(table: pd.DataFrame) -> np.ndarray:
    """Each row's patient: its patient_id, or (missing) its image, which is then its own
    patient."""
    named = known_patients(table["patient_id"])
    return named.where(named != "", table["image"].astype(str)).to_numpy()


def patient_of(row: dict) -> str:
    """One row's patient, by the rule of `patient_keys`: its patient_id, or (missing) its
    image."""
    value = row.get("patient_id")
    return str(row["image"]) if is_missing(value) else str(value).strip()


def split_labels(label: str) -> list[str]:
    """'A|B' -> ['A', 'B'] (a single-label cell gives one item)."""
    return [part for part in str(label).split(LABEL_SEPARATOR) if part]


def check_relative_path(value: str, where: str, inside: str = "the dataset folder") -> str:
    """Reject a path that could escape the folder it is relative to (`inside`): absolute,
    drive-qualified or with '..'."""
    text = str(value).strip()
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if (
        not text
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise DataError(
            f"{where}: path {value!r} escapes {inside}; only relative paths inside it are allowed"
        )
    return text


def read_labels(dataset_dir: Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate `labels.csv`: columns, safe paths, folds, boxes, and (optionally) that
    every file exists."""
    path = dataset_dir / LABELS_FILE
    if not path.is_file():
        raise DataError(
            f"no {LABELS_FILE} in {dataset_dir}: create the dataset first with "
            f"{suggest_download(dataset_dir.name)}"
        )
    try:
        table = read_csv(
            path, dtype={"image": str, "label": str, "patient_id": str}, keep_default_na=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; required: "
            f"{', '.join(REQUIRED_COLUMNS)}"
        )
    if table.empty:
        raise DataError(f"{path}: the dataset has no images")
    for row, image in enumerate(table["image"], start=2):
        check_relative_path(image, f"{path} line {row}")
    folds = pd.to_numeric(table["fold"], errors="coerce")
    if folds.isna().any() or (folds < 0).any() or (folds != folds.round()).any():
        row = int(folds[folds.isna() | (folds < 0) | (folds != folds.round())].index[0]) + 2
        raise DataError(f"{path} line {row}: fold must be a whole number >= 0")
    table["fold"] = folds.astype(int)
    duplicated = table["image"].duplicated(keep=False)
    if duplicated.any():
        first = table.loc[duplicated, "image"].iloc[0]
        lines = [str(i + 2) for i in table.index[table["image"] == first]]
        raise DataError(
            f"{path}: image {first} is listed {len(lines)} times (lines {', '.join(lines)}) and "
            f"{int(duplicated.sum())} rows in all are repeats; each image must have one row"
        )
    missing_label = table["label"].map(is_missing)
    if missing_label.any():
        lines = [str(i + 2) for i in table.index[missing_label]]
        log.warning(
            "%s: %d row(s) without a label left out (lines %s)", path, len(lines), shown_list(lines)
        )
        table = table[
            ~missing_label
        ]  # the index keeps each row's line number (index + 2) for the messages below
        if table.empty:
            raise DataError(f"{path}: no row has a label")
    for column in ("boxes", "lungs"):
        if column in table.columns:
            table[column] = checked_box_column(table, column, path)
    if "lung_mask" in table.columns:  # a user's own masks are read too: they must stay inside
        for row, mask in zip(table.index, table["lung_mask"].astype(str), strict=True):
            if mask.strip() and mask != "nan":
                check_relative_path(mask, f"{path} line {row + 2}, column lung_mask")
    if check_files:
        check_image_files(dataset_dir, table, path)
    return table.reset_index(drop=True)


MISSING_WORDS = {"", "nan", "na", "n/a", "null", "none"}
MAX_IMAGE_SIDE = (
    16384  # pixels: larger files are refused before decoding (a small PNG can decode to gigabytes)
)


def is_missing(value: object) -> bool:
    """Empty cells and the words spreadsheets and pandas write for nothing (NaN, NA, null, None):
    a missing label, or a missing patient id."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or str(value).strip().lower() in MISSING_WORDS
    )


def shown_list(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (
        f" and {len(items) - limit} more" if len(items) > limit else ""
    )


def checked_box_column(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """The column's boxes clipped to each image (its width and height), re-encoded; empty ones
    dropped with a warning."""
    width = pd.to_numeric(
        table.get("width", pd.Series(np.inf, index=table.index)), errors="coerce"
    ).fillna(np.inf)
    height = pd.to_numeric(
        table.get("height", pd.Series(np.inf, index=table.index)), errors="coerce"
    ).fillna(np.inf)
    cleaned, dropped = [], []
    for i, text, w, h in zip(table.index, table[column], width, height, strict=True):
        boxes, empty = clean_boxes(text, w, h, f"{path} line {i + 2}, column {column}")
        cleaned.append(encode_boxes(boxes))
        dropped.extend([str(i + 2)] * empty)
    if dropped:
        log.warning(
            "%s: %d box(es) in column %s lie outside their image or have no area and were dropped "
            "(lines %s)",
            path,
            len(dropped),
            column,
            shown_list(sorted(set(dropped), key=int)),
        )
    return pd.Series(cleaned, index=table.index)


def check_image_files(dataset_dir: Path, table: pd.DataFrame, where: Path | str) -> None:
    """Every listed image exists, stays inside the dataset folder, and has the stored size (read
    from its header).

    The size check runs before any decoding, so a small file that would decode to gigabytes is
    refused by name.
    """
    root = dataset_dir.resolve()
    absent, outside, unreadable, wrong = [], [], [], []
    stored = {}
    for side in ("width", "height"):
        values = pd.to_numeric(
            table.get(side, pd.Series(np.nan, index=table.index)), errors="coerce"
        )
        bad = values.isna() & table.get(side, pd.Series("", index=table.index)).astype(
            str
        ).str.strip().ne("")
        if side in table.columns and (bad | (values <= 0)).any():
            line = int(table.index[bad | (values <= 0)][0]) + 2
            raise DataError(f"{where} line {line}: {side} must be a whole number of pixels > 0")
        stored[side] = values
    sizes = zip(stored["width"], stored["height"], strict=True)
    for image, (width, height) in zip(table["image"], sizes, strict=True):
        file = dataset_dir / image
        if not file.is_file():
            absent.append(image)
            continue
        if not file.resolve().is_relative_to(root):
            outside.append(image)
            continue
        try:
            size = header_size(file)
        except (OSError, ValueError):
            unreadable.append(image)
            continue
        expected = (int(width), int(height)) if pd.notna(width) and pd.notna(height) else None
        if (expected is not None and size != expected) or max(size) > MAX_IMAGE_SIDE:
            wrong.append(f"{image} ({size[0]}x{size[1]})")
    if absent:
        raise DataError(
            f"{where}: {len(absent)} image file(s) listed but missing: {shown_list(absent)}"
        )
    if outside:
        raise DataError(
            f"{where}: {len(outside)} image(s) are links leading outside {dataset_dir}: "
            f"{shown_list(outside)}; "
            "only files inside the dataset folder are read"
        )
    if unreadable:
        raise DataError(
            f"{where}: {len(unreadable)} image file(s) are not readable PNG or JPEG: "
            f"{shown_list(unreadable)}"
        )
    if wrong:
        raise DataError(
            f"{where}: {len(wrong)} image(s) differ from their stored width and height "
            f"(or exceed {MAX_IMAGE_SIDE} px): {shown_list(wrong)}; make the dataset again with "
            "--overwrite"
        )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding its pixels."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    from PIL import Image

    with Image.open(path) as image:  # reads the header only
        return image.size


def suggest_download(dataset: str) -> str:
    """The download command that makes a dataset of this (default) name."""
    for source in SOURCE_NAMES:
        if source != "folder" and (dataset == source or dataset.startswith(source + "-")):
            task = dataset.removeprefix(source).removeprefix("-")
            return f"`cxr download {source}" + (f" --task {task}`" if task else "`")
    return (
        f"`cxr download folder --from YOUR_IMAGES --name {dataset}` "
        "(or another source: `cxr download --help`)"
    )


NEGATIVE_NAMES = ("normal", "no finding", "negative")


def is_negative_class(name: str) -> bool:
    """normal, negative, no finding, no_<finding>: the class a binary task's positive one is not."""
    lower = str(name).lower()
    return lower in NEGATIVE_NAMES or lower.startswith(("no_", "no "))


_GUESSES_TOLD: set[tuple[str, ...]] = set()  # classes whose positive one was said


def choose_positive_class(classes: list[str], configured: str | None = None) -> int | None:
    """Index of the binary task's positive class: the configured one, else the one not named
    normal/no_*/negative."""
    if len(classes) != 2:
        return None
    if configured is not None:
        if configured not in classes:
            raise DataError(
                f"data.positive_class = {configured!r} is not one of the classes "
                f"{', '.join(classes)}"
            )
        return classes.index(configured)
    negative = [i for i, c in enumerate(classes) if is_negative_class(c)]
    positive = 1 - negative[0] if len(negative) == 1 else 1
    if tuple(classes) not in _GUESSES_TOLD:  # once per process, not once per fold
        _GUESSES_TOLD.add(tuple(classes))
        other = classes[1 - positive]
        if len(negative) == 1:
            log.info(
                "positive class: %r, the class not named normal/negative/no_*; set "
                "data.positive_class=%s to choose the other",
                classes[positive],
                other,
            )
        else:
            log.warning(
                "positive class guessed: %r (no single class is named normal/negative/no_*, so "
                "the second of %s was taken); set data.positive_class=%s to choose the other",
                classes[positive],
                ", ".join(classes),
                other,
            )
    return positive


def class_names(table: pd.DataFrame, multi_label: bool = False) -> list[str]:
    """Sorted class names found in the table (each finding separately for multi-label)."""
    if multi_label:
        return sorted({name for label in table["label"] for name in split_labels(label)})
    return sorted(table["label"].unique())
