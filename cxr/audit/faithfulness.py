"""Deletion and insertion curves (Petsiuk et al., RISE, 2018): does removing what the map calls
important hurt?

Pixels are ranked by the map (most salient first). Deletion replaces a growing share of them with
the baseline and records the target class's probability; insertion starts from the baseline and puts
the image's pixels back in the same order. A faithful map gives a low deletion area and a high
insertion area. The baseline is black, or a blurred copy of the image (RISE's insertion canvas: it
removes the detail a finding is made of without adding a dark shape the model may react to).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from cxr.audit.inputs import AuditInputs
from cxr.config import check_baseline
from cxr.explain.report import output_probabilities
from cxr.figures import plt, save_figure
from cxr.results.audit import Faithfulness
from cxr.runs import AUDIT_FILES


def baseline_images(images: np.ndarray, kind: str = "black") -> np.ndarray:
    """What removed pixels become: zeros, or each image blurred (sigma 5 px per 224 px, as in
    RISE)."""
    check_baseline(kind)
    if kind == "black":
        return np.zeros_like(images)
    sigma = 5.0 * images.shape[1] / 224
    return gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect")


def most_salient_first(values: np.ndarray) -> np.ndarray:
    """Indices that order the last axis from the most salient value down, ties by position: the
    ranking every removal metric (deletion, insertion, ROAD) removes pixels in."""
    return np.argsort(-values, axis=-1, kind="stable")


def perturbation_curves(
    model: keras.Model,
    images: np.ndarray,
    maps: np.ndarray,
    class_index: np.ndarray,
    steps: int = 16,
    batch: int = 32,
    baseline: np.ndarray | None = None,
    multi_label: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion), each (B, steps + 1): the target probability after 0, 1/steps, ..., all
    pixels changed (for a multi-label model, the finding's own sigmoid).

    `baseline` (like `images`) holds what removed pixels become; None is black.
    """
    curves = curves_of_maps(
        model, images, {"": maps}, class_index, steps, batch, baseline, multi_label
    )
    return curves[""]


def curves_of_maps(
    model: keras.Model,
    images: np.ndarray,
    maps: dict[str, np.ndarray],
    class_index: np.ndarray,
    steps: int = 16,
    batch: int = 32,
    baseline: np.ndarray | None = None,
    multi_label: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """perturbation_curves for several maps of the same images at once: an image goes through the
    model once per step for all the maps that change the same pixels of it there (every map at
    the first and the last step; maps that rank alike, such as Grad-CAM's and HiResCAM's, at
    every step). Memory stays O(batch) images beside the maps' rankings."""
    baseline = np.zeros_like(images) if baseline is None else baseline
    count, height, width = images.shape[:3]
    pixels = height * width
    orders = {m: most_salient_first(v.reshape(count, -1)) for m, v in maps.items()}
    found = {m: np.empty((2, count, steps + 1)) for m in maps}
    for k in range(steps + 1):  # one step's variants at a time
        changed = round(k * pixels / steps)
        first: dict[tuple[int, bytes], int] = {}  # (image, changed pixels) -> its variant
        made: list[tuple[str, int]] = []  # each variant: whose ranking and which image
        where: dict[tuple[str, int], int] = {}
        for m, order in orders.items():
            mask = np.zeros((count, pixels), dtype=bool)
            np.put_along_axis(mask, order[:, :changed], True, axis=1)
            for i in range(count):
                key = (i, mask[i].tobytes())
                if key not in first:
                    first[key] = len(made)
                    made.append((m, i))
                where[m, i] = first[key]
        probs = []  # (deleted, inserted) of each variant
        half = max(1, batch // 2)  # a batch: half of them deleted, the same half inserted
        for start in range(0, len(made), half):
            part = made[start : start + half]
            gone = np.zeros((len(part), pixels), dtype=bool)
            for row, (m, i) in enumerate(part):
                gone[row, orders[m][i, :changed]] = True
            gone = gone.reshape(len(part), height, width, 1)
            which = [i for _, i in part]
            kept, canvas = images[which], baseline[which]
            variants = np.concatenate([np.where(gone, canvas, kept), np.where(gone, kept, canvas)])
            out = output_probabilities(batched_logits(model, variants, batch), multi_label)
            probs.append(np.stack([out[: len(part)], out[len(part) :]], axis=1))
        probs = np.concatenate(probs)  # (variants, 2, classes)
        for (m, i), j in where.items():
            found[m][:, i, k] = probs[j, :, class_index[i]]
    return {m: (f[0], f[1]) for m, f in found.items()}


def batched_logits(model: keras.Model, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """The model's logits (float64) for a stack of images, `batch` at a time through
    predict_on_batch: Keras's compiled inference step, not an eager call per batch. Every
    forward pass of the audit over perturbed images goes through here."""
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model.predict_on_batch(images[i : i + batch]))
            for i in range(0, len(images), batch)
        ]
    ).astype(np.float64)


def curve_area(curve: np.ndarray) -> np.ndarray:
    """Area under each curve over the share of pixels changed, [0, 1] (trapezoid rule)."""
    steps = curve.shape[-1] - 1
    return np.trapezoid(curve, dx=1 / steps, axis=-1)


def faithfulness_rows(
    model,
    images: np.ndarray,
    targets: np.ndarray,
    maps: dict[str, np.ndarray],
    names: list[str],
    baseline: str = "black",
    multi_label: bool = False,
    batch: int = 32,
) -> tuple[pd.DataFrame, dict]:
    """Deletion and insertion areas per image and method (the maps of the true class), and the
    mean curves."""
    rows, curves = [], {}
    canvas = baseline_images(images, baseline)
    every = curves_of_maps(
        model, images, maps, targets, batch=batch, baseline=canvas, multi_label=multi_label
    )
    for method, (deletion, insertion) in every.items():
        curves[method] = (deletion.mean(axis=0), insertion.mean(axis=0))
        for image, d, i in zip(names, curve_area(deletion), curve_area(insertion), strict=True):
            rows.append(
                {
                    "image": image,
                    "method": method,
                    "deletion_auc": float(d),
                    "insertion_auc": float(i),
                }
            )
    return pd.DataFrame(rows), curves


def summarise_faithfulness(faithfulness: pd.DataFrame, baseline: str) -> dict[str, Faithfulness]:
    """Mean deletion and insertion areas per method."""
    return {
        str(m): Faithfulness(
            images=len(p),
            deletion_auc=float(p["deletion_auc"].mean()),
            insertion_auc=float(p["insertion_auc"].mean()),
            baseline=baseline,
        )
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


def faithfulness_of(inputs: AuditInputs) -> pd.DataFrame:
    """The audit's deletion and insertion rows of its sample, every method and baseline map; the
    mean curves drawn in faithfulness.png."""
    rows, curves = faithfulness_rows(
        inputs.fused,
        inputs.images,
        inputs.targets,
        inputs.every,
        inputs.names,
        inputs.baseline,
        inputs.multi_label,
        inputs.batch,
    )
    plot_curves(curves, inputs.folder / AUDIT_FILES.faithfulness_figure)
    return rows
