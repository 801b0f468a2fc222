"""One report row and one overlay per image, and what they are made from.

`FoldContext` holds what every image of a fold shares (settings, run, classes, output folder), so
the functions below take it instead of long argument lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from cxr.config import Config
from cxr.data.labels import boxes_for, decode_boxes, split_labels
from cxr.data.lungfields import lung_region, seen_box
from cxr.data.regions import REGIONS, region_codes
from cxr.errors import ConfigError
from cxr.explain.methods import Explanation
from cxr.explain.options import TARGET_HELP, ExplainOptions
from cxr.explain.overlay import OVERLAY_FORMATS, draw_overlay, place_map, write_overlay
from cxr.explain.report import (
    box_energy_share,
    inside,
    outcome,
    output_probabilities,
    outside_share,
    peak_location,
    predicted_classes,
)
from cxr.runs import FoldRun

FILMS = "films"  # the stored images beside their overlays, for the review page's detail view


@dataclass(frozen=True)
class FoldContext:
    """What every image of one fold's explanation shares."""

    cfg: Config  # the command line's (explain settings: colours, alpha, lungs, batch size)
    fold_cfg: Config  # the fold's settings (FoldRun.settings), reading the images' dataset
    run: FoldRun
    classes: list[str]
    positive: int | None
    layer: str
    recorded: dict  # method, layer, target, model digest: written in every row, for resuming
    options: ExplainOptions
    folder: Path
    several: bool = False  # several classes per image: a row, an overlay and a verdict per class


def classes_per_image(option: str, classes: list[str]) -> int:
    """How many classes each image's maps explain: K for topK, every class for all-positive
    (those not positive are dropped after the pass), else 1."""
    if option == "all-positive":
        return max(2, len(classes))
    if option.startswith("top") and option not in classes:
        count = option[3:]
        if not count.isdigit() or not 1 <= int(count) <= max(2, len(classes)):
            raise ConfigError(
                f"--target {option!r}: topK takes K from 1 to {max(2, len(classes))}, the number "
                f"of classes; or use {TARGET_HELP}"
            )
        return int(count)
    return 1


def target_indices(option: str, labels: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """None for 'predicted' (chosen in the forward pass), the true classes, one named class for
    all, or (B, K) targets for several classes per image: ranks for topK (-1 the most probable,
    -2 the next...), every class for all-positive.

    `labels` are class indices, or multi-hot rows for multi-label data (then 'true' is the first
    true finding).
    """
    true_index = labels.argmax(axis=1) if labels.ndim == 2 else labels
    several = classes_per_image(option, classes)
    if option == "all-positive":
        return np.tile(np.arange(several), (len(true_index), 1))
    if several > 1:
        return np.tile(-np.arange(1, several + 1), (len(true_index), 1))
    if option in ("predicted", "top1"):
        return None
    if option == "true":
        return true_index
    if option not in classes:
        raise ConfigError(f"--target {option!r}: use {TARGET_HELP} ({', '.join(classes)})")
    return np.full(len(true_index), classes.index(option))


def is_positive(probabilities: np.ndarray, index: int) -> bool:
    """Whether the model calls class `index` present: above 0.5, or the most probable class when
    no class is (so that all-positive explains every image at least once)."""
    top = int(np.argmax(probabilities))
    return bool(probabilities[index] > 0.5 or index == top)


def overlay_name(image: str, suffix: str = ".png", target: str | None = None) -> str:
    """The source image's path below images/ (or its whole relative path), with the overlay's
    suffix; with several classes per image, the explained class joins the name
    (images/a.png -> a.Effusion.jpg)."""
    parts = PurePosixPath(image).parts
    relative = (
        PurePosixPath(*parts[1:])
        if parts[0] == "images" and len(parts) > 1
        else PurePosixPath(image)
    )
    if target is not None:
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", target)
        return str(relative.with_suffix(f".{safe}{suffix}"))
    return str(relative.with_suffix(suffix))


def with_boxes(report: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Attach decoded boxes and sizes (for the localisation summary)."""
    info = table.set_index("image")
    boxes = (
        info["boxes"].map(decode_boxes)
        if "boxes" in info
        else pd.Series([[]] * len(info), index=info.index)
    )
    return report.assign(
        boxes=report["image"].map(boxes),
        width=report["image"].map(info.get("width")),
        height=report["image"].map(info.get("height")),
    )


def image_row(
    ctx: FoldContext,
    row: dict,
    result: Explanation,
    i: int,
    pixels: np.ndarray | None = None,
    with_film: bool = True,
) -> dict:
    """Overlay and report row for one image (runs in a worker thread); the film too, unless
    another row of the same image writes it (`with_film` False: several classes per image)."""
    fold_cfg, cfg, classes, folder = ctx.fold_cfg, ctx.cfg, ctx.classes, ctx.folder
    logits = result.logits[i]
    multi_label = fold_cfg.data.multi_label
    probs = output_probabilities(logits[None], multi_label)[0]
    predicted = int(predicted_classes(logits[None])[0])  # multi-label: the most probable finding
    true_names = split_labels(row["label"]) if multi_label else [row["label"]]
    cropped = fold_cfg.data.crop == "lungs"  # the model saw a crop: the film is read again
    grey = stored_pixels(fold_cfg.data.dataset_dir / row["image"], row, None if cropped else pixels)
    # None when unknown or implausible
    lungs = lung_region(fold_cfg.data.dataset_dir, row, grey.shape)
    box = seen_box(lungs, fold_cfg.data)  # None: the model saw the whole film
    heatmap = place_map(result.maps[i], box, grey.shape)  # on the film, whatever the model saw
    boxes = decode_boxes(row.get("boxes"))
    x, y = peak_location(heatmap)
    target = classes[int(result.class_index[i])]
    # a finding's map against its own boxes (all are drawn); a single-label task's boxes are its
    # positive class's
    judged = boxes_for(boxes, target) if multi_label else boxes
    if ctx.several:  # the verdict on this class: said present (or not), and is it?
        right = is_positive(probs, classes.index(target)) == (target in true_names)
    else:  # the verdict on the image: is the most probable class a true one?
        right = classes[predicted] in true_names
    correct = "right" if right else "wrong"
    suffix = OVERLAY_FORMATS[cfg.explain.overlay_format][0]
    name = overlay_name(row["image"], suffix, target if ctx.several else None)
    overlay = f"{correct}/{name}"
    outline = lungs if cfg.explain.lungs else None
    pixels = draw_overlay(
        grey,
        heatmap,
        cfg.explain.colormap,
        cfg.explain.alpha,
        bool(result.empty[i]),
        boxes,
        outline,
        box,
    )
    write_overlay(pixels, folder / overlay)
    film = f"{FILMS}/{overlay_name(row['image'], suffix)}"  # one per image, whatever the class
    if with_film:
        write_overlay(grey, folder / film)
    return {
        "fold": ctx.run.fold,
        "image": row["image"],
        "patient_id": row["patient_id"],
        "true_class": row["label"],
        "predicted_class": classes[predicted],
        "confidence": float(probs[predicted]),
        "correct": correct,
        "outcome": ""
        if multi_label
        else outcome(classes.index(row["label"]), predicted, ctx.positive),
        **{f"prob_{name}": float(p) for name, p in zip(classes, probs, strict=True)},
        **ctx.recorded,
        "target_class": target,
        "raw_peak": float(result.raw_peak[i]),
        "empty": bool(result.empty[i]),
        "peak_x": x,
        "peak_y": y,
        "peak_in_box": float(inside(x, y, judged))
        if judged and not result.empty[i]
        else float("nan"),  # 1/0; NaN: no box
        "box_energy_share": box_energy_share(heatmap, judged),
        "peak_region": REGIONS[region_codes(lungs)[y, x]]
        if lungs is not None and not result.empty[i]
        else "",
        # the review page sorts by it; NaN when the lungs are unknown or the map is empty
        "outside_lungs": outside_share(heatmap, lungs)
        if lungs is not None and not result.empty[i]
        else float("nan"),
        "overlay": overlay,
        "film": film,
    }


def stored_pixels(path: Path, row: dict, pixels: np.ndarray | None) -> np.ndarray:
    """The stored image as uint8 grey: the pipeline's decoded pixels when they are at the stored
    size (resizing to the same size changes nothing), else the file read again."""
    try:
        stored = (int(row["height"]), int(row["width"]))
    except (KeyError, TypeError, ValueError):
        stored = None
    if pixels is not None and stored == pixels.shape:
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return np.asarray(Image.open(path).convert("L"))
