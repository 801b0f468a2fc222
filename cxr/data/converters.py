"""Turn each source's own files (once downloaded and extracted) into `Item`s.

A converter takes the folder holding the source's files, in the layout its
publisher ships, and yields items for `write_dataset`; it never writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pandas as pd

from cxr.catalogs.sources import NIH_FINDINGS
from cxr.data.dataset import Item
from cxr.data.images import is_image_file, read_image
from cxr.data.labels import BOX_FINDING_NAMES, Box, check_relative_path, clean_boxes
from cxr.errors import DataError, shorten

log = logging.getLogger(__name__)

NIH_RELEASE_SIZE = 1024  # NIH boxes are in pixels of the 1024 x 1024 release images
NIH_EXTRA_COLUMNS = {
    "view": "View Position",
    "age": "Patient Age",
    "sex": "Patient Gender",
    "follow_up": "Follow-up #",
}
COVID_FOLDERS = {
    "covid": "covid",
    "covid-19": "covid",
    "normal": "normal",
    "viral pneumonia": "viral_pneumonia",
    "lung_opacity": "lung_opacity",
}


def find_file(root: Path, pattern: str, hint: str) -> Path:
    """The first file under `root` matching `pattern` (newest name first), or a DataError saying
    where to get it."""
    matches = sorted(root.rglob(pattern), key=lambda p: p.name, reverse=True)
    if not matches:
        raise DataError(f"no {pattern} under {root}: {hint}")
    return matches[0]


def read_source_csv(path: Path, **options: object) -> pd.DataFrame:
    """A source's or a user's CSV (a spreadsheet's UTF-8 BOM allowed); anything unreadable is one
    DataError."""
    try:
        return pd.read_csv(path, encoding="utf-8-sig", **options)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8 CSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: unreadable CSV ({shorten(str(exc), 200)})") from None


def index_files(root: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """File name -> path for every file below `root` with one of `suffixes`."""
    return {p.name: p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()}


def _loader(path: Path, root: Path):
    """Read `path` when it is called; a link that leads outside `root` is skipped and listed, never
    followed."""

    def load():
        if not path.resolve().is_relative_to(root.resolve()):
            raise DataError(
                f"{path}: a link leading outside {root}; only files inside the import folder are "
                "read (give the folder the links lead to, or copy the files in)"
            )
        return read_image(path)

    return load


def nih_task_label(findings: str, task: str) -> str:
    """'all' keeps the multi-label string; a finding name gives a binary label."""
    if task == "all":
        return findings
    names = findings.split("|")
    finding = next(f for f in NIH_FINDINGS if f.lower() == task)
    return task if finding in names else f"no_{task}"


def convert_nih(root: Path, task: str) -> Iterator[Item]:
    """NIH ChestX-ray14: PNGs + Data_Entry_2017*.csv (patients) + BBox_List_2017.csv (boxes,
    1024-px)."""
    if task != "all" and task not in {f.lower() for f in NIH_FINDINGS}:
        allowed = ", ".join(["all", *(f.lower() for f in NIH_FINDINGS)])
        raise DataError(f"unknown nih-cxr14 task {task!r}; allowed: {allowed}")
    hint = (
        "download Data_Entry_2017_v2020.csv from https://nihcc.app.box.com/v/ChestXray-NIHCC "
        "into that folder"
    )
    entries = read_source_csv(
        find_file(root, "Data_Entry_2017*.csv", hint), dtype=str, keep_default_na=False
    )
    boxes = read_nih_boxes(root)
    images = index_files(root, (".png",))
    absent = [name for name in entries["Image Index"] if name not in images]
    if absent:
        log.warning(
            "%d of %d images in the NIH table are not in %s (not downloaded?); converting the %d "
            "present",
            len(absent),
            len(entries),
            root,
            len(entries) - len(absent),
        )
    needed = ["Image Index", "Finding Labels", "Patient ID"]
    if not set(needed) <= set(entries.columns):
        raise DataError(
            f"NIH table lacks column(s) {', '.join(set(needed) - set(entries.columns))}"
        )
    for row in entries.to_dict("records"):
        name = row["Image Index"]
        if name not in images:
            continue
        yield Item(
            image=f"images/{check_relative_path(name, 'NIH image name')}",
            load=_loader(images[name], root),
            label=nih_task_label(row["Finding Labels"], task),
            patient_id=str(row["Patient ID"]),
            boxes=boxes.get(name, []),
            box_reference=(NIH_RELEASE_SIZE, NIH_RELEASE_SIZE),
            extra={
                "findings": row["Finding Labels"],
                **{k: row.get(v, "") for k, v in NIH_EXTRA_COLUMNS.items()},
            },
            origin=str(images[name]),
        )


def read_nih_boxes(root: Path) -> dict[str, list[Box]]:
    """Image name -> boxes from BBox_List_2017.csv (the header has trailing empty columns)."""
    matches = sorted(root.rglob("BBox_List_2017.csv"))
    if not matches:
        log.warning("no BBox_List_2017.csv under %s: the dataset will have no boxes", root)
        return {}
    table = read_source_csv(matches[0], usecols=range(6))
    table.columns = ["image", "label", "x", "y", "w", "h"]
    result: dict[str, list[Box]] = {}
    for row in table.itertuples(index=False):
        label = BOX_FINDING_NAMES.get(row.label, row.label)
        result.setdefault(row.image, []).append(
            Box(float(row.x), float(row.y), float(row.w), float(row.h), label)
        )
    return result


def convert_rsna(root: Path, task: str) -> Iterator[Item]:
    """RSNA pneumonia: DICOMs + stage_2_train_labels.csv (one row per box; Target 1 = pneumonia)."""
    hint = "the Kaggle competition archive has it (stage_2_train_labels.csv)"
    labels = read_source_csv(find_file(root, "stage_*_train_labels.csv", hint))
    missing = {"patientId", "Target", "x", "y", "width", "height"} - set(labels.columns)
    if missing:
        raise DataError(
            f"RSNA labels lack column(s) {', '.join(sorted(missing))}: is this "
            "stage_2_train_labels.csv?"
        )
    details = _rsna_details(root)
    dicoms = {p.stem: p for p in root.rglob("*.dcm")}
    log.warning(
        "RSNA's patientId is one per image, so folds cannot group a patient's images: each image "
        "is its own group"
    )
    for pid, rows in labels.groupby("patientId", sort=True):
        if pid not in dicoms:
            log.warning("RSNA image %s.dcm listed in the labels but not found; left out", pid)
            continue
        positive = bool(rows["Target"].max() == 1)
        boxes = [
            Box(float(r.x), float(r.y), float(r.width), float(r.height), "pneumonia")
            for r in rows.itertuples()
            if r.Target == 1
        ]
        yield Item(
            image=f"images/{pid}.png",
            load=_loader(dicoms[pid], root),
            label=task if positive else f"no_{task}",
            patient_id=str(pid),
            boxes=boxes,
            extra={"rsna_class": details.get(pid, "")},
            origin=str(dicoms[pid]),
        )


def _rsna_details(root: Path) -> dict[str, str]:
    matches = sorted(root.rglob("stage_*_detailed_class_info.csv"))
    if not matches:
        return {}
    table = read_source_csv(matches[-1]).drop_duplicates("patientId")
    return dict(zip(table["patientId"], table["class"], strict=True))


def convert_covid(root: Path, classes: list[str]) -> Iterator[Item]:
    """COVID-19 Radiography Database: one folder per class (images directly inside or in
    images/)."""
    found = {}
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        cls = COVID_FOLDERS.get(folder.name.lower())
        if cls in classes and cls not in found:
            found[cls] = folder
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataError(
            f"no folder for class(es) {', '.join(missing)} under {root}; expected folders named "
            f"{', '.join(COVID_FOLDERS)}"
        )
    log.warning(
        "the COVID-19 Radiography Database has no patient ids: each image is its own group in the "
        "folds"
    )
    for cls, folder in found.items():
        for path in sorted(
            p for p in folder.rglob("*") if is_image_file(p) and "masks" not in p.parts
        ):
            yield Item(
                image=f"images/{cls}/{path.stem}.png",
                load=_loader(path, root),
                label=cls,
                origin=str(path),
            )


def convert_folder(
    root: Path, csv: Path | None = None, csv_root: Path | None = None
) -> Iterator[Item]:
    """A user's own images: one sub-folder per class, or a CSV of path,label[,patient_id] and
    annotations (see convert_csv)."""
    if csv is not None:
        yield from convert_csv(csv, csv_root)
        return
    if not root.is_dir():
        raise DataError(f"folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root} has no class sub-folders; expected one folder per class (e.g. {root}/normal/, "
            f"{root}/pneumonia/), or pass --csv"
        )
    for folder in class_dirs:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        ignored = [p.name for p in files if not is_image_file(p)]
        if ignored:
            log.warning(
                "ignored %d file(s) in %s that are not PNG, JPEG or DICOM: %s",
                len(ignored),
                folder,
                ", ".join(ignored[:5]),
            )
        for path in (p for p in files if is_image_file(p)):
            relative = path.relative_to(root).with_suffix(".png").as_posix()
            yield Item(
                image=f"images/{relative}",
                load=_loader(path, root),
                label=folder.name,
                origin=str(path),
            )


CSV_COLUMNS = ("path", "label", "patient_id", "boxes", "lungs", "lung_mask", "mask")
OWN_COLUMNS = ("image", "fold", "width", "height", "lung_mask_plausible", "lung_mask_problem")


def convert_csv(csv: Path, root: Path | None = None) -> Iterator[Item]:
    """A CSV of path,label and optionally patient_id; `boxes` and `lungs` (JSON lists of
    {x, y, w, h, label} in pixels of the source image); `lung_mask` or `mask` (a PNG of the lung
    fields, the source image's size); any other column (view, sex, age, site, ...) is carried
    into labels.csv. Paths are relative to `root` (default: the CSV's folder), which nothing may
    leave."""
    if not csv.is_file():
        raise DataError(f"CSV file {csv} not found")
    root = root or csv.parent
    if not root.is_dir():
        raise DataError(f"--root {root}: no such folder")
    table = read_source_csv(csv, dtype=str, keep_default_na=False)
    if not {"path", "label"} <= set(table.columns):
        raise DataError(
            f"{csv}: needs columns path,label (and optionally patient_id, boxes, lungs, "
            f"lung_mask, other columns); found {', '.join(table.columns)}"
        )
    table = keep_own_columns_apart(table, csv)
    mask_column = next((c for c in ("lung_mask", "mask") if c in table.columns), None)
    carried = [c for c in table.columns if c not in CSV_COLUMNS]
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{csv} line {line}"
        relative = check_relative_path(row["path"], f"{where}, column path", str(root))
        path = root / relative
        stored = PurePosixPath(relative)
        if stored.parts[0] == "images" and len(stored.parts) > 1:
            stored = PurePosixPath(*stored.parts[1:])  # images/x.png stays images/x.png
        yield Item(
            image=f"images/{stored.with_suffix('.png').as_posix()}",
            load=_loader(path, root) if path.is_file() else _missing(path, root),
            label=row["label"],
            patient_id=row.get("patient_id", ""),
            boxes=source_boxes(row.get("boxes", ""), f"{where}, column boxes"),
            lungs=source_boxes(row.get("lungs", ""), f"{where}, column lungs"),
            lung_mask=lung_mask_file(root, row.get(mask_column or "", ""), where, mask_column),
            extra={c: row[c] for c in carried},
            origin=str(path),
        )


def keep_own_columns_apart(table: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """Columns cxr writes itself in labels.csv (`width`, `height`, `fold`, ...) are kept as
    `source_<name>`, said in one line; refused only when that name is taken too."""
    clashing = [c for c in table.columns if c in OWN_COLUMNS]
    if not clashing:
        return table
    renamed = {c: f"source_{c}" for c in clashing}
    taken = [new for new in renamed.values() if new in table.columns]
    if taken:
        raise DataError(
            f"{csv}: column(s) {', '.join(clashing)} are cxr's own in labels.csv and "
            f"{', '.join(taken)} are taken too; rename them"
        )
    log.warning(
        "%s: column(s) %s are cxr's own in labels.csv: kept as %s",
        csv,
        ", ".join(clashing),
        ", ".join(renamed.values()),
    )
    return table.rename(columns=renamed)


def source_boxes(text: str, where: str) -> list[Box]:
    """A cell of boxes in source pixels, checked now (a bad value names its row) and clipped to
    the image later."""
    return clean_boxes(text, math.inf, math.inf, where)[0]


def lung_mask_file(root: Path, value: str, where: str, column: str | None) -> Path | None:
    """The mask a row names, inside `root` and present, or None for an empty cell."""
    if not str(value).strip():
        return None
    relative = check_relative_path(value, f"{where}, column {column}", str(root))
    path = root / relative
    if not path.is_file():
        raise DataError(f"{where}, column {column}: mask {path} not found")
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{where}, column {column}: {path} is a link leading outside {root}")
    return path


def _missing(path: Path, root: Path):
    def load():
        raise DataError(f"{path}: file not found (paths are relative to {root})")

    return load
