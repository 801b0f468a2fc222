"""One pass over a fold's images that feeds every audit.

Each batch is decoded once and every method's maps of the true class are computed once; from them
come the localisation scores (boxed images), the shortcut rows (the first method's map of the
predicted class, which is the same map wherever the prediction is right, so only the wrong ones
are explained again), the figure of a few boxed images, and a sample for the audits that need the
model again (sanity check, faithfulness). The sample is drawn across outcomes (TP, TN, FP, FN; the
true classes when there are no outcomes), seeded, keeping at most `sample_size` images per outcome
in memory, so a fold of any size is read once in bounded memory.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cxr.audit.localisation import baseline_maps, localisation_scores
from cxr.audit.regions import map_regions
from cxr.audit.shortcut import DOMINATES, allowed_region
from cxr.config import Config
from cxr.data.labels import Box, boxes_for, choose_positive_class, decode_boxes, patient_of
from cxr.data.lungfields import lung_region, seen_box, stored_size
from cxr.data.pipeline import fold_dataset
from cxr.explain.methods import explain_batch, explain_methods
from cxr.explain.overlay import place_map
from cxr.explain.probe import Probe
from cxr.explain.report import outcome, outside_share, predicted_classes

FIGURE_IMAGES = 4


@dataclass
class Sample:
    """Images kept in memory with their maps of the true class, one entry per image."""

    names: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    def add(self, name: str, image: np.ndarray, target: int, maps: dict, row: dict) -> None:
        self.names.append(name)
        self.images.append(image)
        self.targets.append(target)
        for method, heatmap in maps.items():
            self.maps.setdefault(method, []).append(heatmap)
        self.rows.append(row)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(images, targets, maps per method), stacked."""
        return (
            np.stack(self.images),
            np.asarray(self.targets),
            {m: np.stack(v) for m, v in self.maps.items()},
        )


@dataclass
class FoldPass:
    """What one pass over a fold yields."""

    localisation: pd.DataFrame  # per boxed image, per method and baseline
    shortcuts: pd.DataFrame  # per image: share outside, peak region, energy per region
    sample: Sample  # for the sanity check and faithfulness, across outcomes
    figure: Sample  # the first boxed images, for methods.png


def explained_findings(
    labels: np.ndarray, boxes: list[list[Box]], classes: list[str]
) -> np.ndarray:
    """The class each multi-hot row is explained for: its first true finding that has a box on the
    film (so localisation has something to measure), else its first true finding."""
    targets = labels.argmax(axis=1)
    for i, found in enumerate(boxes):
        boxed = [k for k in np.flatnonzero(labels[i]) if boxes_for(found, classes[k])]
        if boxed:
            targets[i] = boxed[0]
    return targets


class OutcomeSample:
    """At most `size` images per outcome, those with the smallest seeded random keys."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heaps: dict[str, list] = {}

    def offer(self, group: str, key: float, order: int, item: tuple) -> None:
        heap = self.heaps.setdefault(group, [])
        entry = (-key, order, item)  # a max-heap on key: the largest is dropped first
        if len(heap) < self.size:
            heapq.heappush(heap, entry)
        elif entry > heap[0]:
            heapq.heapreplace(heap, entry)

    def taking_turns(self) -> Sample:
        """Groups in name order, each in key order, one image from each in turn, `size` in all."""
        ordered = [sorted(self.heaps[g], key=lambda e: -e[0]) for g in sorted(self.heaps)]
        sample = Sample()
        for i in range(max(map(len, ordered), default=0)):
            for group in ordered:
                if i < len(group) and len(sample.names) < self.size:
                    sample.add(*group[i][2])
        return sample


def sweep_fold(
    fold_cfg: Config,
    probe: Probe,
    table: pd.DataFrame,
    classes: list[str],
    methods: list[str],
    sample_size: int = 16,
) -> FoldPass:
    """Every image of the fold, once, through every method, in batches of explain.batch_size
    (also every explain call's padded size: one traced shape per method)."""
    batch = fold_cfg.explain.batch_size
    dataset_dir = fold_cfg.data.dataset_dir
    multi_label = fold_cfg.data.multi_label
    positive = None if multi_label else choose_positive_class(classes, fold_cfg.data.positive_class)
    keys = np.random.default_rng(0).random(len(table))
    baselines_rng = np.random.default_rng(0)
    sampler, figure = OutcomeSample(sample_size), Sample()
    localisation: list[dict] = []
    shortcuts: list[dict] = []
    ds = fold_dataset(fold_cfg, table, classes, batch)
    for start, (images, labels) in zip(range(0, len(table), batch), ds, strict=False):
        labels = labels.numpy()
        rows = table.iloc[start : start + batch].to_dict("records")
        boxes_of = [decode_boxes(r.get("boxes")) for r in rows]  # read once, for targets and scores
        if multi_label:
            targets = explained_findings(labels, boxes_of, classes)
        else:
            targets = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int)
        explained = explain_methods(probe, images, targets, methods, pad_to=batch)
        maps = {m: e.maps for m, e in explained.items()}
        predicted = predicted_classes(explained[methods[0]].logits)
        of_predicted = maps[methods[0]].copy()
        wrong = predicted != targets
        if wrong.any():
            of_predicted[wrong] = explain_batch(
                probe, images.numpy()[wrong], predicted[wrong], methods[0], pad_to=batch
            ).maps
        images = images.numpy()
        for i, row in enumerate(rows):
            size = stored_size(dataset_dir, row)
            lungs = lung_region(dataset_dir, row, size)  # None when unknown or implausible
            box = seen_box(lungs, fold_cfg.data)  # None: the model saw the whole film
            truth = outcome(int(targets[i]), int(predicted[i]), positive)
            own = {m: maps[m][i] for m in methods}
            item = (row["image"], images[i], int(targets[i]), own, row)
            sampler.offer(truth or str(row["label"]), float(keys[start + i]), start + i, item)
            boxes = boxes_of[i]
            if multi_label:  # the explained finding's own boxes
                boxes = boxes_for(boxes, classes[int(targets[i])])
            if boxes:
                if len(figure.names) < FIGURE_IMAGES:
                    figure.add(*item[:4], row | {"stored_size": size, "crop_box": box})
                resized = {m: place_map(own[m], box, size) for m in methods}
                for name, heatmap in (resized | baseline_maps(size, baselines_rng)).items():
                    localisation.append(
                        {
                            "image": row["image"],
                            "patient_id": patient_of(row),
                            "label": row["label"],
                            "method": name,
                        }
                        | localisation_scores(heatmap, boxes)
                    )
            shortcut = shortcut_row(row, lungs, place_map(of_predicted[i], box, size))
            shortcuts.append(
                shortcut | {"predicted_class": classes[int(predicted[i])], "outcome": truth}
            )
    return FoldPass(
        pd.DataFrame(localisation), pd.DataFrame(shortcuts), sampler.taking_turns(), figure
    )


def shortcut_row(row: dict, lungs: np.ndarray | None, heatmap: np.ndarray) -> dict:
    """The map of the predicted class, on the stored film, against the allowed region and, where
    the lung fields are known (`lungs` at the stored size), the regions. An implausible lung mask
    is not trusted: that image has no regions and is judged by the border band, like an image
    whose lung fields are unknown."""
    size = heatmap.shape
    share = outside_share(heatmap, allowed_region(size, lungs))
    return {
        "image": row["image"],
        "patient_id": patient_of(row),
        "label": row["label"],
        "outside_share": share,
        "flagged": bool(share > DOMINATES),
        "implausible_lungs": lungs is None and bool(row.get("lung_mask")),
        **(map_regions(heatmap, lungs) if lungs is not None else {"peak_region": ""}),
    }
