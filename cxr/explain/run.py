"""explain_fold(cfg, fold, options): every validation image of a fold through that fold's best
model.

Streams batches from disk; the map of one batch is computed while a thread pool writes the previous
batch's overlays, so memory stays flat and PNG encoding overlaps with the gradients. Writes into
runs/<experiment>/explain/fold<K>/: right/ and wrong/ overlays, report.csv, summary.json,
montage.png, index.html, and maps.npz with --save-maps.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from cxr.atomic import write_text_atomic
from cxr.audit.regions import REGIONS, region_codes
from cxr.card import write_model_card
from cxr.config import Config
from cxr.data.download import file_digest
from cxr.data.labels import decode_boxes, from_spreadsheet_safe, split_labels, spreadsheet_safe
from cxr.data.pipeline import fold_dataset, images_named_on_failure
from cxr.errors import ConfigError, DataError
from cxr.evaluate import choose_positive_class
from cxr.explain.agreement import fold_agreement, summarise_agreement
from cxr.explain.gallery import write_html, write_montage
from cxr.explain.methods import Explanation, explain_batch, get_method
from cxr.explain.options import ExplainOptions, in_shard
from cxr.explain.overlay import draw_overlay, resize_map, write_overlay
from cxr.explain.probe import coarse_map_note, make_probe
from cxr.explain.registry import LAYER_METHODS
from cxr.explain.report import (
    box_energy_share,
    inside,
    outcome,
    output_probabilities,
    peak_location,
    summarise_fold,
)
from cxr.external import External, analysis_settings, analysis_table, output_root
from cxr.lungs.run import lung_region
from cxr.models.precision import use_mixed_precision, with_policy
from cxr.models.registry import get_model_spec
from cxr.runs import FoldRun, experiment_dir, open_trained_fold, trained_folds

log = logging.getLogger(__name__)
_NOTED: set[str] = set()
# PNG encoding and decoding release the GIL: with a GPU busy on the maps, the CPU cores draw the
# overlays
OVERLAY_THREADS = max(2, min(8, os.cpu_count() or 2))


@dataclass(frozen=True)
class FoldExplanation:
    fold: int
    folder: Path
    report: pd.DataFrame
    summary: dict


def explain_dir(cfg: Config, fold: int) -> Path:
    return experiment_dir(cfg) / "explain" / f"fold{fold}"


def target_indices(option: str, labels: np.ndarray, classes: list[str]) -> np.ndarray | None:
    """None for 'predicted' (chosen in the forward pass), the true classes, or one named class for
    all.

    `labels` are class indices, or multi-hot rows for multi-label data (then 'true' is the first
    true finding).
    """
    true_index = labels.argmax(axis=1) if labels.ndim == 2 else labels
    if option == "predicted":
        return None
    if option == "true":
        return true_index
    if option not in classes:
        raise ConfigError(
            f"--target {option!r}: use predicted, true or a class name ({', '.join(classes)})"
        )
    return np.full(len(true_index), classes.index(option))


def overlay_name(image: str) -> str:
    """The source image's path below images/ (or its whole relative path), as a PNG."""
    parts = PurePosixPath(image).parts
    relative = (
        PurePosixPath(*parts[1:])
        if parts[0] == "images" and len(parts) > 1
        else PurePosixPath(image)
    )
    return str(relative.with_suffix(".png"))


def explain_fold(
    cfg: Config, fold: int, options: ExplainOptions, on: External | None = None
) -> FoldExplanation:
    """Maps, overlays, report and summary for one fold's validation images (or, `on`, for every
    image of an external dataset)."""
    get_method(options.method)
    run = open_trained_fold(cfg, fold)
    fold_cfg = analysis_settings(cfg, run, on)
    classes = run.read_classes()
    positive = choose_positive_class(classes, fold_cfg.data.positive_class)
    folder = output_root(cfg, on) / "explain" / f"fold{fold}"
    layer = options.layer or cfg.explain.layer or get_model_spec(fold_cfg.model.name).explain_layer
    table = analysis_table(run, fold_cfg, on)
    table = table[[in_shard(image, options.shard) for image in table["image"]]].reset_index(
        drop=True
    )
    settings = {
        "method": options.method,
        "layer": layer if options.method in LAYER_METHODS else "input",
        "target": options.target,
        "model_sha256": file_digest(run.model)[
            :16
        ],  # a retrained fold never reuses the old model's maps
    }
    previous = pd.DataFrame() if options.overwrite else read_previous_rows(folder, settings)
    todo = table[~table["image"].isin(previous.get("image", pd.Series(dtype=str)))].reset_index(
        drop=True
    )
    log.info(
        "fold %d: %d images to explain, %d done before (%s at %s)",
        fold,
        len(todo),
        len(table) - len(todo),
        options.method,
        layer,
    )

    with images_named_on_failure(fold_cfg.data.dataset_dir, todo):
        rows = (
            explain_rows(
                cfg, fold_cfg, run, todo, classes, positive, layer, settings, options, folder
            )
            if len(todo)
            else []
        )
    report = pd.concat([previous, pd.DataFrame(rows)], ignore_index=True) if rows else previous
    report = (
        report[report["image"].isin(table["image"])].sort_values("image").reset_index(drop=True)
    )
    summary = summarise_fold(with_boxes(report, table)) | {"fold": fold, **settings}
    if options.fold_agreement:
        found = agreement_of(cfg, run, report, classes, options, layer, on)
        write_text_atomic(folder / "fold_agreement.csv", found.to_csv(index=False))
        summary["fold_agreement"] = summarise_agreement(found)
    name = (
        "report.csv"
        if options.shard is None
        else f"report.shard{options.shard[0]}of{options.shard[1]}.csv"
    )
    write_text_atomic(folder / name, spreadsheet_safe(report).to_csv(index=False))
    write_text_atomic(
        folder / name.replace("report", "summary").replace(".csv", ".json"),
        json.dumps(summary, indent=2) + "\n",
    )
    write_montage(folder, report, options.montage_size)
    write_html(folder, report, classes, experiment_dir(cfg) / "MODEL_CARD.html")
    return FoldExplanation(fold, folder, report, summary)


def agreement_of(
    cfg: Config,
    run: FoldRun,
    report: pd.DataFrame,
    classes: list[str],
    options: ExplainOptions,
    layer: str,
    on: External | None,
) -> pd.DataFrame:
    """The report's images explained again by every other trained fold (cxr.explain.agreement)."""
    others = [open_trained_fold(cfg, k) for k in trained_folds(cfg) if k != run.fold]
    if not others:
        raise ConfigError(
            f"--fold-agreement compares fold {run.fold}'s maps with other folds' models, and "
            f"experiment {cfg.experiment.name!r} has no other trained fold; train one first"
        )
    settings = {r.fold: analysis_settings(cfg, r, on) for r in [run, *others]}
    target_layer = layer if options.method in LAYER_METHODS else None
    return fold_agreement(run, others, settings, report, classes, options.method, target_layer)


def read_previous_rows(folder: Path, settings: dict) -> pd.DataFrame:
    """Rows of earlier runs (any shard) with the same settings whose overlay still exists."""
    text_columns = {"image": str, "patient_id": str, "outcome": str}
    frames = [pd.read_csv(path, dtype=text_columns) for path in sorted(folder.glob("report*.csv"))]
    if not frames:
        return pd.DataFrame()
    rows = from_spreadsheet_safe(
        pd.concat(frames, ignore_index=True).drop_duplicates("image", keep="last")
    )
    rows[["patient_id", "outcome"]] = rows[["patient_id", "outcome"]].fillna("")
    if not set(settings) <= set(rows.columns):
        return pd.DataFrame()
    same = np.logical_and.reduce(
        [rows[key].astype(str) == str(value) for key, value in settings.items()]
    )
    exists = rows["overlay"].map(lambda p: (folder / p).is_file())
    return rows[same & exists].reset_index(drop=True)


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


def explain_rows(
    cfg: Config,
    fold_cfg: Config,
    run: FoldRun,
    todo: pd.DataFrame,
    classes: list[str],
    positive: int | None,
    layer: str,
    settings: dict,
    options: ExplainOptions,
    folder: Path,
) -> list[dict]:
    """The streaming loop: one batch of maps at a time, overlays written by a thread pool
    meanwhile."""
    model = run.load_model()
    if use_mixed_precision(cfg.explain.mixed_precision, "explain.mixed_precision"):
        model = with_policy(model, "mixed_float16")
    probe = make_probe(
        model, layer if options.method in LAYER_METHODS else None, jit_compile=cfg.explain.xla
    )
    note = coarse_map_note(model, probe.layer_name) if options.method in LAYER_METHODS else None
    if note and note not in _NOTED:  # once per process, not once per fold
        _NOTED.add(note)
        log.warning("%s", note)
    batch_size = cfg.explain.batch_size
    ds = fold_dataset(fold_cfg, todo, classes, batch_size)
    rows: list[dict] = []
    maps_name = (
        "maps.npz"
        if options.shard is None
        else f"maps.shard{options.shard[0]}of{options.shard[1]}.npz"
    )
    maps_file = MapsWriter(folder / maps_name) if options.save_maps else None
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=OVERLAY_THREADS) as pool:
        for start, (images, labels) in zip(range(0, len(todo), batch_size), ds, strict=False):
            part = todo.iloc[start : start + batch_size]
            targets = target_indices(options.target, labels.numpy(), classes)
            # one shape: one trace
            result = explain_batch(probe, images, targets, options.method, pad_to=batch_size)
            for done in pending:  # keep at most one batch of overlays in flight
                rows.append(done.result())
            pixels = images.numpy()[
                ..., 0
            ]  # the decoded images: the overlays reuse them when the stored size is the model's
            pending = [
                pool.submit(
                    image_row,
                    fold_cfg,
                    run.fold,
                    row,
                    result,
                    i,
                    classes,
                    positive,
                    settings,
                    cfg,
                    folder,
                    pixels[i],
                )
                for i, row in enumerate(part.to_dict("records"))
            ]
            if maps_file:
                maps_file.add(part["image"].tolist(), result)
        rows.extend(done.result() for done in pending)
    if maps_file:
        maps_file.close()
    return rows


def image_row(
    fold_cfg: Config,
    fold: int,
    row: dict,
    result: Explanation,
    i: int,
    classes: list[str],
    positive: int | None,
    settings: dict,
    cfg: Config,
    folder: Path,
    pixels: np.ndarray | None = None,
) -> dict:
    """Overlay and report row for one image (runs in a worker thread)."""
    logits = result.logits[i]
    multi_label = fold_cfg.data.multi_label
    probs = output_probabilities(logits[None], multi_label)[0]
    predicted = int(np.argmax(probs))  # multi-label: the most probable finding
    true_names = split_labels(row["label"]) if multi_label else [row["label"]]
    grey = stored_pixels(fold_cfg.data.dataset_dir / row["image"], row, pixels)
    heatmap = resize_map(result.maps[i], *grey.shape)
    boxes = decode_boxes(row.get("boxes"))
    x, y = peak_location(heatmap)
    # None when unknown or implausible
    lungs = lung_region(fold_cfg.data.dataset_dir, row, grey.shape)
    correct = "right" if classes[predicted] in true_names else "wrong"
    overlay = f"{correct}/{overlay_name(row['image'])}"
    outline = lungs if cfg.explain.lungs else None
    pixels = draw_overlay(
        grey,
        heatmap,
        cfg.explain.colormap,
        cfg.explain.alpha,
        bool(result.empty[i]),
        boxes,
        outline,
    )
    write_overlay(pixels, folder / overlay)
    return {
        "fold": fold,
        "image": row["image"],
        "patient_id": row["patient_id"],
        "true_class": row["label"],
        "predicted_class": classes[predicted],
        "confidence": float(probs[predicted]),
        "correct": correct,
        "outcome": "" if multi_label else outcome(classes.index(row["label"]), predicted, positive),
        **{f"prob_{name}": float(p) for name, p in zip(classes, probs, strict=True)},
        **settings,
        "target_class": classes[int(result.class_index[i])],
        "raw_peak": float(result.raw_peak[i]),
        "empty": bool(result.empty[i]),
        "peak_x": x,
        "peak_y": y,
        "peak_in_box": float(inside(x, y, boxes))
        if boxes and not result.empty[i]
        else float("nan"),  # 1/0; NaN: no box
        "box_energy_share": box_energy_share(heatmap, boxes),
        "peak_region": REGIONS[region_codes(lungs)[y, x]]
        if lungs is not None and not result.empty[i]
        else "",
        "overlay": overlay,
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


class MapsWriter:
    """An .npz written entry by entry (as numpy.savez lays it out), so memory does not grow with the
    fold."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_DEFLATED)

    def add(self, images: list[str], result: Explanation) -> None:
        for i, image in enumerate(images):
            for kind, array in (("raw", result.raw_maps[i]), ("upsampled", result.maps[i])):
                with self.zip.open(f"{image}/{kind}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asarray(array, dtype=np.float32))

    def close(self) -> None:
        self.zip.close()
        self.tmp.replace(self.path)


def explain_folds(
    cfg: Config, folds: list[int], options: ExplainOptions, on: External | None = None
) -> tuple[list[FoldExplanation], pd.DataFrame | None]:
    """Several folds; with more than one, also one report over all of them."""
    if not folds:
        raise DataError(
            f"no trained folds to explain for experiment {cfg.experiment.name!r}; run `cxr train` "
            "first"
        )
    results = [explain_fold(cfg, fold, options, on) for fold in folds]
    write_model_card(cfg)
    if len(results) == 1:
        return results, None
    combined = pd.concat([r.report for r in results], ignore_index=True)
    write_text_atomic(
        output_root(cfg, on) / "explain" / "report.csv",
        spreadsheet_safe(combined).to_csv(index=False),
    )
    return results, combined
