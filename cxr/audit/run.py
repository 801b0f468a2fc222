"""audit_fold(cfg, fold, methods): localisation against boxes and the randomisation sanity check,
per method.

Writes runs/<experiment>/audit/fold<K>/: localisation.csv (per image, per method and baseline),
sanity.csv (per method and stage), faithfulness.csv and .png (deletion / insertion), shortcuts.csv,
and summary.json (means with bootstrap 95% intervals, the best method, and whether each method
passed the sanity check).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr.atomic import write_text_atomic
from cxr.audit.faithfulness import baseline_images, check_baseline, curve_area, perturbation_curves
from cxr.audit.localisation import baseline_maps, bootstrap_interval, localisation_scores
from cxr.audit.regions import map_regions
from cxr.audit.sanity import Cascade
from cxr.audit.shortcut import DOMINATES, allowed_region, outside_share, summarise_shortcuts
from cxr.config import Config
from cxr.data.labels import decode_boxes
from cxr.data.pipeline import encode_labels, fold_dataset, images_named_on_failure
from cxr.errors import ConfigError
from cxr.evaluate import choose_positive_class, plt, save_figure
from cxr.explain.methods import explain_batch, get_method
from cxr.explain.overlay import resize_map
from cxr.explain.probe import make_probe
from cxr.explain.report import outcome
from cxr.explain.run import load_fold_table
from cxr.lungs.run import compute_lungs, has_lung_fields, lung_region
from cxr.models.registry import get_model_spec
from cxr.runs import FoldRun, experiment_dir, open_trained_fold

log = logging.getLogger(__name__)
SANITY_IMAGES = 16  # also the batch size of every step, padded: one traced shape per method
SANITY_PASS = 0.5  # the last stage's maps must rank-correlate less than this with the trained ones


@dataclass(frozen=True)
class AuditResult:
    folder: Path
    localisation: pd.DataFrame
    sanity: pd.DataFrame
    summary: dict
    faithfulness: pd.DataFrame
    shortcuts: pd.DataFrame


def audit_fold(
    cfg: Config,
    fold: int,
    methods: list[str],
    layer: str | None = None,
    sanity_stages: int = 8,
    baseline: str = "black",
) -> AuditResult:
    """Every part of the audit for one fold; an undecodable image is named, not a TensorFlow
    traceback."""
    if not methods:
        raise ConfigError(
            "no explanation method to audit: name one or more, e.g. --methods gradcam,hirescam"
        )
    for method in methods:
        get_method(method)
    check_baseline(baseline)  # a wrong name fails before any work
    run = open_trained_fold(cfg, fold)
    fold_cfg = run.read_config()
    # real radiographs: the shipped lung model finds them first
    if not has_lung_fields(fold_cfg.data.dataset_dir):
        log.info(
            "%s has no lung fields yet: computing them (as `cxr lungs` does)",
            fold_cfg.data.dataset_dir,
        )
        compute_lungs(fold_cfg.data.dataset_dir)
    table = load_fold_table(run, fold_cfg)
    with images_named_on_failure(fold_cfg.data.dataset_dir, table):
        return _audit_fold(cfg, run, fold_cfg, table, methods, layer, sanity_stages, baseline)


def _audit_fold(
    cfg: Config,
    run: FoldRun,
    fold_cfg: Config,
    table: pd.DataFrame,
    methods: list[str],
    layer: str | None,
    sanity_stages: int,
    baseline: str,
) -> AuditResult:
    fold = run.fold
    classes = run.read_classes()
    layer = layer or cfg.explain.layer or get_model_spec(fold_cfg.model.name).explain_layer
    model = run.load_model()
    probe = make_probe(model, layer)
    boxed = table[
        table.get("boxes", pd.Series("[]", index=table.index)).map(
            lambda b: len(decode_boxes(b)) > 0
        )
    ].reset_index(drop=True)
    rows = localisation_rows(fold_cfg, probe, boxed, classes, methods) if len(boxed) else []
    localisation = pd.DataFrame(rows)
    sample = table.head(SANITY_IMAGES)
    sample_ds = fold_dataset(fold_cfg, sample, classes)
    images = np.concatenate([x.numpy() for x, _ in sample_ds])
    targets = encode_labels(sample["label"], classes, fold_cfg.data.multi_label)
    targets = targets.argmax(axis=1) if targets.ndim == 2 else targets
    cascade = Cascade(model, layer, probe)
    sanity = pd.DataFrame(
        [row for m in methods for row in cascade.run(images, targets, m, sanity_stages)]
    )
    faithfulness, curves = faithfulness_rows(
        model, probe, images, targets, sample, methods, baseline
    )
    shortcuts = pd.DataFrame(shortcut_rows(fold_cfg, probe, table, classes, methods[0]))
    summary = summarise_audit(localisation, sanity, fold, layer) | {
        "shortcuts": summarise_shortcuts(shortcuts) | {"method": methods[0]}
    }
    summary["faithfulness"] = summarise_faithfulness(faithfulness, baseline)
    folder = experiment_dir(cfg) / "audit" / f"fold{fold}"
    write_text_atomic(folder / "faithfulness.csv", faithfulness.to_csv(index=False))
    plot_curves(curves, folder / "faithfulness.png")
    write_text_atomic(folder / "methods.csv", methods_table(summary).to_csv())
    if len(boxed):
        plot_methods(fold_cfg, probe, boxed.head(4), classes, methods, folder / "methods.png")
    write_text_atomic(folder / "shortcuts.csv", shortcuts.to_csv(index=False))
    write_text_atomic(folder / "localisation.csv", localisation.to_csv(index=False))
    write_text_atomic(folder / "sanity.csv", sanity.to_csv(index=False))
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
    return AuditResult(folder, localisation, sanity, summary, faithfulness, shortcuts)


def localisation_rows(
    fold_cfg: Config, probe, boxed: pd.DataFrame, classes: list[str], methods: list[str]
) -> list[dict]:
    """Scores of every method (explaining each image's true class) and of the two baselines, per
    boxed image."""
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    ds = fold_dataset(fold_cfg, boxed, classes, 16)
    for start, (images, labels) in zip(range(0, len(boxed), 16), ds, strict=False):
        part = boxed.iloc[start : start + 16]
        labels = labels.numpy()
        targets = labels.argmax(axis=1) if labels.ndim == 2 else labels
        results = {
            m: explain_batch(probe, images, targets, m, pad_to=SANITY_IMAGES).maps for m in methods
        }
        for i, row in enumerate(part.to_dict("records")):
            size = Image.open(fold_cfg.data.dataset_dir / row["image"]).size[::-1]
            boxes = decode_boxes(row["boxes"])
            maps = {m: resize_map(results[m][i], *size) for m in methods} | baseline_maps(size, rng)
            for name, heatmap in maps.items():
                rows.append(
                    {
                        "image": row["image"],
                        "label": row["label"],
                        "method": name,
                        **localisation_scores(heatmap, boxes),
                    }
                )
    return rows


def faithfulness_rows(
    model,
    probe,
    images: np.ndarray,
    targets: np.ndarray,
    sample: pd.DataFrame,
    methods: list[str],
    baseline: str = "black",
) -> tuple[pd.DataFrame, dict]:
    """Deletion and insertion areas per image and method (explaining the true class), and the mean
    curves."""
    rows, curves = [], {}
    canvas = baseline_images(images, baseline)
    for method in methods:
        maps = explain_batch(probe, images, targets, method, pad_to=SANITY_IMAGES).maps
        deletion, insertion = perturbation_curves(model, images, maps, targets, baseline=canvas)
        curves[method] = (deletion.mean(axis=0), insertion.mean(axis=0))
        for image, d, i in zip(
            sample["image"], curve_area(deletion), curve_area(insertion), strict=True
        ):
            rows.append(
                {
                    "image": image,
                    "method": method,
                    "deletion_auc": float(d),
                    "insertion_auc": float(i),
                }
            )
    return pd.DataFrame(rows), curves


def summarise_faithfulness(faithfulness: pd.DataFrame, baseline: str) -> dict:
    """Mean deletion and insertion areas per method."""
    return {
        m: {
            "deletion_auc": float(p["deletion_auc"].mean()),
            "insertion_auc": float(p["insertion_auc"].mean()),
            "images": len(p),
            "baseline": baseline,
        }
        for m, p in faithfulness.groupby("method", sort=False)
    }


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Mean deletion and insertion curves, one line per method."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for method, (deletion, insertion) in curves.items():
        share = np.linspace(0, 1, len(deletion))
        axes[0].plot(share, deletion, label=method)
        axes[1].plot(share, insertion, label=method)
    for ax, title in zip(
        axes,
        ("deletion (lower is more faithful)", "insertion (higher is more faithful)"),
        strict=True,
    ):
        ax.set(
            title=title,
            xlabel="share of pixels, most salient first",
            ylabel="target probability",
            ylim=(0, 1.02),
        )
    axes[1].legend(fontsize=8)
    save_figure(fig, path)


def methods_table(summary: dict) -> pd.DataFrame:
    """Every method (and baseline) on one row: localisation, faithfulness and the sanity check side
    by side."""
    rows = {}
    for method, scores in summary["localisation"].items():
        rows[method] = {
            "pointing_game": scores["pointing_hit"]["mean"],
            "iou_otsu": scores["iou@otsu"]["mean"],
            "t_iobb_0.25": scores["t(iobb)@0.25"]["mean"],
        }
    for method, f in summary.get("faithfulness", {}).items():
        rows.setdefault(method, {}).update(
            deletion_auc=f["deletion_auc"], insertion_auc=f["insertion_auc"]
        )
    for method, check in summary["sanity"].items():
        rows.setdefault(method, {}).update(
            randomised_spearman=check["last_stage_spearman"], sanity_passes=check["passes"]
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def plot_methods(
    fold_cfg: Config,
    probe,
    images: pd.DataFrame,
    classes: list[str],
    methods: list[str],
    path: Path,
) -> None:
    """A few images with boxes, one column per method: the same maps side by side."""
    ds = fold_dataset(fold_cfg, images, classes, len(images))
    batch, labels = next(iter(ds))
    labels = labels.numpy()
    targets = labels.argmax(axis=1) if labels.ndim == 2 else labels
    maps = {m: explain_batch(probe, batch, targets, m, pad_to=SANITY_IMAGES).maps for m in methods}
    fig, axes = plt.subplots(
        len(images), len(methods), figsize=(2.4 * len(methods), 2.4 * len(images)), squeeze=False
    )
    for r, row in enumerate(images.to_dict("records")):
        grey = np.asarray(Image.open(fold_cfg.data.dataset_dir / row["image"]).convert("L"))
        for c, method in enumerate(methods):
            ax = axes[r][c]
            ax.imshow(grey, cmap="gray")
            ax.imshow(
                resize_map(maps[method][r], *grey.shape), cmap="jet", alpha=0.4, vmin=0, vmax=1
            )
            for b in decode_boxes(row["boxes"]):
                ax.add_patch(
                    plt.Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor="white", linewidth=1)
                )
            ax.set_axis_off()
            if r == 0:
                ax.set_title(method, fontsize=9)
    save_figure(fig, path)


def shortcut_rows(
    fold_cfg: Config, probe, table: pd.DataFrame, classes: list[str], method: str
) -> list[dict]:
    """Every validation image, its predicted class explained: the share of the map outside the
    allowed region, and, where the lung fields are known, where its peak falls and how much of it
    lies outside lungs and chest."""
    rows: list[dict] = []
    positive = (
        None
        if fold_cfg.data.multi_label
        else choose_positive_class(classes, fold_cfg.data.positive_class)
    )
    ds = fold_dataset(fold_cfg, table, classes, 16)
    for start, (images, _) in zip(range(0, len(table), 16), ds, strict=False):
        result = explain_batch(probe, images, None, method, pad_to=SANITY_IMAGES)
        for i, row in enumerate(table.iloc[start : start + 16].to_dict("records")):
            size = Image.open(fold_cfg.data.dataset_dir / row["image"]).size[::-1]
            lungs = lung_region(fold_cfg.data.dataset_dir, row, size)
            if lungs is None and row.get("lung_mask"):
                continue  # an implausible lung mask: left out rather than trusted
            heatmap = resize_map(result.maps[i], *size)
            share = outside_share(heatmap, allowed_region(size, lungs))
            predicted = int(result.class_index[i])
            truth = (
                ""
                if positive is None
                else outcome(classes.index(row["label"]), predicted, positive)
            )
            rows.append(
                {
                    "image": row["image"],
                    "patient_id": row.get("patient_id") or row["image"],
                    "label": row["label"],
                    "predicted_class": classes[predicted],
                    "outcome": truth,
                    "outside_share": share,
                    "flagged": bool(share > DOMINATES),
                    **(map_regions(heatmap, lungs) if lungs is not None else {"peak_region": ""}),
                }
            )
    return rows


def audit_folds(
    cfg: Config,
    folds: list[int],
    methods: list[str],
    layer: str | None = None,
    sanity_stages: int = 8,
    baseline: str = "black",
) -> tuple[list[AuditResult], dict | None]:
    """Each fold in turn; with several, also the audit pooled over them in
    runs/<experiment>/audit/."""
    results = [audit_fold(cfg, fold, methods, layer, sanity_stages, baseline) for fold in folds]
    if len(results) < 2:
        return results, None
    pooled = pool_audits(results, baseline)
    folder = experiment_dir(cfg) / "audit"
    by_fold = pd.concat([methods_table(r.summary).assign(fold=r.summary["fold"]) for r in results])
    write_text_atomic(folder / "methods_by_fold.csv", by_fold.to_csv())
    write_text_atomic(folder / "methods.csv", methods_table(pooled).to_csv())
    write_text_atomic(folder / "summary.json", json.dumps(pooled, indent=2) + "\n")
    return results, pooled


def pool_audits(results: list[AuditResult], baseline: str = "black") -> dict:
    """One summary over folds: localisation and faithfulness pooled over every fold's images (each
    explained by the model that did not train on it); the sanity check per fold, passed only when it
    passes in every fold."""
    folds = [r.summary["fold"] for r in results]
    localisation = pd.concat([r.localisation for r in results], ignore_index=True)
    pooled = {
        "fold": None,
        "folds": folds,
        "layer": results[0].summary["layer"],
    } | summarise_localisation(localisation)
    pooled["sanity"] = {}
    for method in results[0].summary["sanity"]:
        checks = [r.summary["sanity"][method] for r in results]
        pooled["sanity"][method] = {
            "stages": checks[0]["stages"],
            "last_stage_spearman": float(np.mean([c["last_stage_spearman"] for c in checks])),
            "unrelated_pairs_spearman": float(
                np.mean([c["unrelated_pairs_spearman"] for c in checks])
            ),
            "folds_passing": sum(c["passes"] for c in checks),
            "passes": all(c["passes"] for c in checks),
        }
    faithfulness = pd.concat([r.faithfulness for r in results], ignore_index=True)
    pooled["faithfulness"] = summarise_faithfulness(faithfulness, baseline)
    shortcuts = pd.concat([r.shortcuts for r in results], ignore_index=True)
    pooled["shortcuts"] = summarise_shortcuts(shortcuts) | {
        "method": results[0].summary["shortcuts"]["method"]
    }
    return pooled


def summarise_audit(
    localisation: pd.DataFrame, sanity: pd.DataFrame, fold: int, layer: str
) -> dict:
    if not len(localisation):
        log.warning("fold %d has no image with a box: localisation skipped", fold)
    summary: dict = {"fold": fold, "layer": layer} | summarise_localisation(localisation)
    summary["sanity"] = {}
    for method, part in sanity.groupby("method", sort=False):
        last = part.iloc[-1]
        summary["sanity"][method] = {
            "stages": len(part),
            "last_stage_spearman": float(last["spearman"]),
            "unrelated_pairs_spearman": float(last["unrelated_pairs_spearman"]),
            "passes": bool(last["spearman"] < SANITY_PASS),
        }
    return summary


def summarise_localisation(localisation: pd.DataFrame) -> dict:
    """Per method and baseline: each score's mean with a bootstrap 95% interval, and the best method
    by pointing game."""
    rng = np.random.default_rng(0)
    summary: dict = {"localisation": {}}
    if not len(localisation):
        return summary
    scores = [c for c in localisation.columns if c not in ("image", "label", "method")]
    for method, part in localisation.groupby("method", sort=False):
        summary["localisation"][method] = {
            score: {
                "mean": float(part[score].mean()),
                "ci95": bootstrap_interval(part[score].to_numpy(), rng),
            }
            for score in scores
        }
        summary["localisation"][method]["images"] = len(part)
    methods = [m for m in summary["localisation"] if m not in ("random", "centre")]
    summary["best_method_by_pointing_game"] = max(
        methods, key=lambda m: summary["localisation"][m]["pointing_hit"]["mean"]
    )
    return summary
