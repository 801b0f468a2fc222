"""The one canonical table every source converts into: `labels.csv`.

Columns: image (path relative to the dataset folder), label (class name, or a
`|`-joined list for multi-label), patient_id, fold, boxes (JSON list of
{"x", "y", "w", "h", "label"} in pixels of the stored image), width, height;
sources may add more (e.g. findings, view).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from cxr.errors import DataError

LABELS_FILE = "labels.csv"
SKIPPED_FILE = "skipped.csv"
REQUIRED_COLUMNS = ("image", "label", "patient_id", "fold")
LABEL_SEPARATOR = "|"


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
    return json.dumps([{k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(b).items()} for b in boxes])


def decode_boxes(text: object) -> list[Box]:
    """Parse the `boxes` column; an empty cell means no boxes."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or str(text).strip() == "":
        return []
    return [Box(**item) for item in json.loads(str(text))]


def box_mask(shape: tuple[int, int], boxes: list[Box]) -> np.ndarray:
    """Pixels covered by any box (pixel (x, y) is inside when x0 <= x < x0 + w)."""
    mask = np.zeros(shape, dtype=bool)
    for b in boxes:
        mask[max(round(b.y), 0) : round(b.y + b.h), max(round(b.x), 0) : round(b.x + b.w)] = True
    return mask


def split_labels(label: str) -> list[str]:
    """'A|B' -> ['A', 'B'] (a single-label cell gives one item)."""
    return [part for part in str(label).split(LABEL_SEPARATOR) if part]


def check_relative_path(value: str, where: str) -> str:
    """Reject a path that could escape the dataset folder: absolute, drive-qualified or with '..'."""
    text = str(value).strip()
    posix, windows = PurePosixPath(text), PureWindowsPath(text)
    if not text or posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts or ".." in windows.parts:
        raise DataError(f"{where}: path {value!r} escapes the dataset folder; only relative paths inside it are allowed")
    return text


def read_labels(dataset_dir: Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate `labels.csv`: columns, safe paths, folds, boxes, and (optionally) that every file exists."""
    path = dataset_dir / LABELS_FILE
    if not path.is_file():
        raise DataError(f"no {LABELS_FILE} in {dataset_dir}: create the dataset first with {suggest_download(dataset_dir.name)}")
    try:
        table = pd.read_csv(path, dtype={"image": str, "label": str, "patient_id": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}")
    if table.empty:
        raise DataError(f"{path}: the dataset has no images")
    for row, image in enumerate(table["image"], start=2):
        check_relative_path(image, f"{path} line {row}")
    folds = pd.to_numeric(table["fold"], errors="coerce")
    if folds.isna().any() or (folds < 0).any() or (folds != folds.round()).any():
        row = int(folds[folds.isna() | (folds < 0) | (folds != folds.round())].index[0]) + 2
        raise DataError(f"{path} line {row}: fold must be a whole number >= 0")
    table["fold"] = folds.astype(int)
    if (table["label"].str.strip() == "").any():
        row = int(table.index[table["label"].str.strip() == ""][0]) + 2
        raise DataError(f"{path} line {row}: empty label")
    if "boxes" in table.columns:
        for row, text in enumerate(table["boxes"], start=2):
            try:
                decode_boxes(text)
            except (ValueError, TypeError) as exc:
                raise DataError(f"{path} line {row}: bad boxes value {text!r} ({exc})") from None
    if check_files:
        absent = [img for img in table["image"] if not (dataset_dir / img).is_file()]
        if absent:
            shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise DataError(f"{path}: {len(absent)} image file(s) listed but missing: {shown}")
    return table


def suggest_download(dataset: str) -> str:
    """The download command that makes a dataset of this (default) name."""
    for source in ("synthetic", "nih-cxr14", "rsna-pneumonia", "covid-radiography"):
        if dataset == source or dataset.startswith(source + "-"):
            task = dataset.removeprefix(source).removeprefix("-")
            return f"`cxr download {source}" + (f" --task {task}`" if task else "`")
    return f"`cxr download folder --from YOUR_IMAGES --name {dataset}` (or another source: `cxr download --help`)"


def write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    """Write a CSV via a temporary file and a rename: readers never see half a table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".csv.tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            table.to_csv(handle, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def class_names(table: pd.DataFrame, multi_label: bool = False) -> list[str]:
    """Sorted class names found in the table (each finding separately for multi-label)."""
    if multi_label:
        return sorted({name for label in table["label"] for name in split_labels(label)})
    return sorted(table["label"].unique())
