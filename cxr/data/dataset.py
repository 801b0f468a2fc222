"""Write any source's items into the standard layout, all or nothing.

`<dest>/<name>/images/...`, `labels.csv`, `skipped.csv`, `dataset.json`. The
folder is built under a temporary name and renamed at the end, so an
interrupted run never leaves half a dataset, and an existing one is replaced
only with --overwrite.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from cxr import __version__
from cxr.atomic import make_work_folder, stale_work_folders
from cxr.data.folds import assign_folds
from cxr.data.images import read_image, resize_image, write_png
from cxr.data.labels import (
    LABELS_FILE,
    SKIPPED_FILE,
    Box,
    check_relative_path,
    class_names,
    decode_boxes,
    encode_boxes,
    is_missing,
    read_labels,
    shown_list,
)
from cxr.data.plausible import mask_problem
from cxr.errors import DataError, shorten
from cxr.tables import write_csv

log = logging.getLogger(__name__)
METADATA_FILE = "dataset.json"


@dataclass
class Item:
    """One image from a source, loaded lazily so a corrupt file is skipped, not fatal.

    `boxes` are in pixels of `box_reference` (width, height); None means the loaded image.
    """

    image: str  # output path relative to the dataset folder, e.g. images/0001.png
    load: Callable[[], np.ndarray]
    label: str
    patient_id: str = ""
    boxes: list[Box] = field(default_factory=list)
    box_reference: tuple[float, float] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    origin: str = ""  # where it came from, for the skipped list
    lungs: list[Box] = field(default_factory=list)  # lung fields as boxes, like `boxes`
    lung_mask: Path | None = None  # a mask of the lung fields at the source image's size


def describe_skipped(skipped: list[dict[str, str]]) -> str:
    """Why images were skipped, most common reason first, with an example of each."""
    why = [s["reason"].removeprefix(f"{s['origin']}: ") for s in skipped]  # the path is given
    reasons = Counter(why)
    first: dict[str, str] = {}
    for reason, s in zip(why, skipped, strict=True):
        first.setdefault(reason, s["origin"])
    return "; ".join(
        f"{n} for {shorten(reason, 160)} (e.g. {first[reason]})"
        for reason, n in reasons.most_common(3)
    ) + ("; …" if len(reasons) > 3 else "")


def write_dataset(
    items: Iterable[Item],
    dest: Path,
    name: str,
    *,
    size: int | None,
    folds: int,
    seed: int,
    multi_label: bool = False,
    overwrite: bool = False,
    metadata: dict[str, object] | None = None,
    progress: Callable[[Iterable[Item]], Iterable[Item]] = lambda items: items,
) -> Path:
    """Convert, assign folds, write the tables; returns the dataset folder."""
    final = dest / name
    if final.exists() and not overwrite:
        raise DataError(f"dataset folder {final} already exists; pass --overwrite to replace it")
    for stale in stale_work_folders(dest, name):
        log.warning("removing %s, left by an interrupted earlier run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    work = make_work_folder(dest, name)
    try:
        rows, skipped = convert_items(progress(items), work, size)
        table = pd.DataFrame(rows)
        warn_implausible_masks(table)
        if table.empty:
            raise DataError(
                f"no readable images for dataset {name!r}: {len(skipped)} skipped, "
                f"{describe_skipped(skipped)}"
            )
        if skipped:
            log.warning(
                "skipped %d image(s), listed in %s: %s",
                len(skipped),
                SKIPPED_FILE,
                describe_skipped(skipped),
            )
        check_two_classes(table, multi_label, name)
        table.insert(3, "fold", assign_folds(table, folds, seed, multi_label))
        warn_identical_images(table)
        table = table.drop(columns="pixels_sha1")
        write_csv(table, work / LABELS_FILE)
        write_csv(pd.DataFrame(skipped, columns=["origin", "image", "reason"]), work / SKIPPED_FILE)
        info = {
            "name": name,
            "images": len(table),
            "skipped": len(skipped),
            "folds": folds,
            "seed": seed,
            "multi_label": multi_label,
            "image_size": size,
            "classes": table["label"].value_counts().sort_index().to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cxr_version": __version__,
            **(metadata or {}),
        }
        (work / METADATA_FILE).write_text(
            json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8"
        )
        replace_folder(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def summarise_dataset(folder: Path) -> str:
    """What `cxr download` wrote, for a user to check: images, patients, folds, annotations,
    skipped files, and images per fold and class."""
    table = read_labels(folder, check_files=False)
    boxes = table.get("boxes", pd.Series("", index=table.index)).map(decode_boxes)
    lungs = table.get("lungs", pd.Series("", index=table.index)).map(decode_boxes)
    masks = table.get("lung_mask", pd.Series("", index=table.index)).astype(str).str.strip()
    skipped_file = folder / SKIPPED_FILE
    skipped = len(pd.read_csv(skipped_file)) if skipped_file.is_file() else 0
    counts = table.assign(label=table["label"].map(lambda t: t.replace("|", "+") or "(none)"))
    per_fold = counts.groupby(["fold", "label"]).size().unstack(fill_value=0)
    per_fold.loc["all"] = per_fold.sum()
    extra = [c for c in table.columns if c not in CXR_COLUMNS]
    lines = [
        f"{folder}: {len(table)} images, {table['patient_id'].nunique()} patients, "
        f"{table['fold'].nunique()} folds; {int(boxes.map(len).sum())} boxes in "
        f"{int((boxes.map(len) > 0).sum())} images; lung fields for "
        f"{int(((lungs.map(len) > 0) | (masks != '')).sum())} images; {skipped} skipped"
        + (f" (listed in {skipped_file})" if skipped else ""),
        *([f"other columns kept: {', '.join(extra)}"] if extra else []),
        "images per fold and class:",
        per_fold.to_string(),
    ]
    return "\n".join(lines)


CXR_COLUMNS = (
    "image",
    "label",
    "patient_id",
    "fold",
    "boxes",
    "width",
    "height",
    "lungs",
    "lung_mask",
    "lung_mask_plausible",
    "lung_mask_problem",
)


def check_two_classes(table: pd.DataFrame, multi_label: bool, name: str) -> None:
    """A classifier needs at least two classes (findings, for multi-label data)."""
    found = class_names(table, multi_label)
    if len(found) < 2:
        kind = "finding" if multi_label else "class"
        raise DataError(
            f"dataset {name!r} has one {kind} only ({', '.join(found)}): a classifier needs at "
            "least two; "
            "add images of another class"
        )


def warn_identical_images(table: pd.DataFrame) -> None:
    """Byte-identical images in different folds let a model be validated on what it trained on: say
    which."""
    folds_per_image = table.groupby("pixels_sha1")["fold"].nunique()
    leaking = folds_per_image[folds_per_image > 1].index
    if len(leaking):
        groups = [
            " = ".join(table.loc[table["pixels_sha1"] == digest, "image"]) for digest in leaking
        ]
        log.warning(
            "%d group(s) of identical images lie in different folds (the same image in training "
            "and validation): %s",
            len(groups),
            shown_list(groups, 3),
        )


def convert_items(
    items: Iterable[Item], work: Path, size: int | None
) -> tuple[list[dict], list[dict]]:
    """Load, resize and write each image; collect table rows and the skipped list."""
    rows: list[dict] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    for item in items:
        relative = check_relative_path(item.image, f"image {item.origin or item.image}")
        if relative in seen:
            raise DataError(
                f"two source images map to the same output file {relative}; rename one of them"
            )
        seen.add(relative)
        if is_missing(item.label):
            skipped.append(
                {
                    "origin": item.origin or relative,
                    "image": relative,
                    "reason": f"missing label {item.label!r}",
                }
            )
            continue
        try:
            raw = item.load()
        except DataError as exc:
            skipped.append(
                {"origin": item.origin or relative, "image": relative, "reason": str(exc)}
            )
            continue
        image = resize_image(raw, size)
        lungs = {}
        if item.lung_mask is not None:
            lungs = write_lung_mask(item, raw.shape[:2], image.shape[:2], work)
        write_png(image, work / relative)
        ref_w, ref_h = item.box_reference or (raw.shape[1], raw.shape[0])
        sx, sy = image.shape[1] / ref_w, image.shape[0] / ref_h
        if item.lungs:
            lungs["lungs"] = encode_boxes([b.scaled(sx, sy) for b in item.lungs])
        rows.append(
            {
                "image": relative,
                "label": item.label,
                "patient_id": "" if is_missing(item.patient_id) else str(item.patient_id).strip(),
                "boxes": encode_boxes([b.scaled(sx, sy) for b in item.boxes]),
                "width": image.shape[1],
                "height": image.shape[0],
                **lungs,
                **item.extra,
                "pixels_sha1": hashlib.sha1(
                    image.tobytes() + str(image.shape).encode()
                ).hexdigest(),
            }
        )
    return rows, skipped


def warn_implausible_masks(table: pd.DataFrame) -> None:
    """The lung masks a user gave that fail the check computed masks get: named, then left out
    of the audit's lung statistics like those."""
    if "lung_mask_plausible" not in table:
        return
    failed = table[table["lung_mask_plausible"] == "0"]
    if len(failed):
        log.warning(
            "%d of the lung masks given look implausible and are left out of the audit's lung "
            "statistics (lung_mask_problem in labels.csv): %s",
            len(failed),
            shown_list([f"{r.image} ({r.lung_mask_problem})" for r in failed.itertuples()], 3),
        )


def write_lung_mask(
    item: Item, source: tuple[int, int], stored: tuple[int, int], work: Path
) -> dict[str, str]:
    """The item's lung mask at the stored size (nearest neighbour, 0/255) under masks/, beside
    where cxr's own computed masks go (lungs/): a user's mask is never recomputed, but it is
    checked like a computed one (lung_mask_plausible, lung_mask_problem). A mask that is not
    binary (a soft or anti-aliased one) is thresholded at half its maximum."""
    try:
        levels = read_image(item.lung_mask)
    except DataError as exc:
        raise DataError(f"{item.origin}: its lung mask is unreadable ({exc})") from None
    if levels.shape != source:
        raise DataError(
            f"{item.lung_mask}: the lung mask is {levels.shape[1]}x{levels.shape[0]} pixels, its "
            f"image {item.origin} {source[1]}x{source[0]}; a mask must match its image"
        )
    mask = levels > levels.max() / 2
    if mask.shape != stored:
        resized = Image.fromarray(mask).resize(stored[::-1], Image.Resampling.NEAREST)
        mask = np.asarray(resized)
    relative = str(PurePosixPath("masks") / PurePosixPath(item.image).relative_to("images"))
    write_png(mask.astype(np.uint8) * 255, work / relative)
    problem = mask_problem(mask)
    grey = len(np.unique(levels))
    shown = "; ".join(filter(None, [f"not binary ({grey} levels)" if grey > 2 else "", problem]))
    return {
        "lung_mask": relative,
        "lung_mask_plausible": "0" if problem else "1",
        "lung_mask_problem": shown,
    }


def replace_folder(new: Path, final: Path) -> None:
    """Swap `new` into place; the old folder is removed only after the new one is in. A dataset
    folder that is a link is replaced as a link: the link goes, the folder it led to is left as
    it is (it may be another disk's, and is not cxr's to delete)."""
    if not (final.exists() or final.is_symlink()):
        new.rename(final)
        return
    backup = final.with_name(f".{final.name}.old")
    remove_path(backup)  # a leftover of an interrupted run
    final.rename(backup)
    new.rename(final)
    if backup.is_symlink():
        log.warning(
            "%s was a link to %s: the link is replaced by the new dataset; that folder is left as "
            "it was",
            final,
            backup.resolve(),
        )
    remove_path(backup)


def remove_path(path: Path) -> None:
    """Remove a folder with its contents, or a file or link itself (never what a link leads to)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
