"""Synthetic phantoms: boxes cover what was drawn, CTR separates the classes, the bias marker
correlates as asked."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr.data.labels import decode_boxes, read_labels
from cxr.data.synthetic import make_synthetic_items, marker_region, render_case, sample_case
from cxr.errors import DataError


def changed_pixels(case, **removed) -> np.ndarray:
    """Where the image differs when the named finding is left out (same noise)."""
    with_finding, _ = render_case(case)
    without, _ = render_case(replace(case, **removed))
    return with_finding.astype(int) != without.astype(int)


def box_mask(box, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[int(box.y) : int(box.y + box.h), int(box.x) : int(box.x + box.w)] = True
    return mask


@pytest.mark.parametrize("seed", range(12))
def test_pneumonia_box_covers_the_opacity_tightly(seed: int) -> None:
    case = sample_case(np.random.default_rng(seed), 256, "pneumonia", positive=True, marker=False)
    _, boxes = render_case(case)
    assert [b.label for b in boxes] == ["pneumonia"]
    changed = changed_pixels(case, opacity=None)
    inside = box_mask(boxes[0], 256)
    assert changed.sum() > 300
    assert not (changed & ~inside).any(), "the opacity changed pixels outside its box"
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    # tight, up to faint rim pixels
    assert rows[0] - boxes[0].y <= 2 and boxes[0].y + boxes[0].h - 1 - rows[-1] <= 2
    assert cols[0] - boxes[0].x <= 2 and boxes[0].x + boxes[0].w - 1 - cols[-1] <= 2


@pytest.mark.parametrize("seed", range(6))
def test_cardiomegaly_box_covers_the_heart_and_ctr_exceeds_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    big = sample_case(rng, 256, "cardiomegaly", positive=True, marker=False)
    small = sample_case(rng, 256, "cardiomegaly", positive=False, marker=False)
    _, boxes = render_case(big)
    heart = changed_pixels(big, heart=None)
    assert not (heart & ~box_mask(boxes[0], 256)).any()
    # cardiothoracic ratio measured from pixels: heart width over outer lung-to-lung width
    lungs = changed_pixels(
        replace(big, heart=None),
        lungs=(replace(big.lungs[0], rx=1e-6), replace(big.lungs[1], rx=1e-6)),
    )
    for case, expect_big in ((big, True), (small, False)):
        heart_cols = np.flatnonzero(changed_pixels(case, heart=None).any(0))
        lung_cols = np.flatnonzero(lungs.any(0))
        ratio = (heart_cols[-1] - heart_cols[0] + 1) / (lung_cols[-1] - lung_cols[0] + 1)
        assert (ratio > 0.5) == expect_big, ratio
    assert render_case(small)[1] == []


def test_lung_boxes_cover_the_lung_fields() -> None:
    from cxr.data.labels import decode_boxes
    from cxr.data.synthetic import lung_boxes

    case = sample_case(np.random.default_rng(4), 128, "pneumonia", positive=False, marker=False)
    boxes = lung_boxes(case)
    lungs = changed_pixels(
        case, lungs=(replace(case.lungs[0], rx=1e-6), replace(case.lungs[1], rx=1e-6))
    )
    covered = box_mask(boxes[0], 128) | box_mask(boxes[1], 128)
    # the anatomy is blurred (sigma 0.5 px at 128 px): allow a 3-pixel halo
    grown = np.zeros_like(covered)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            grown |= np.roll(np.roll(covered, dy, axis=0), dx, axis=1)
    assert len(boxes) == 2 and not (lungs & ~grown).any()
    assert (lungs & covered).sum() > 0.9 * lungs.sum()
    item = next(iter(make_synthetic_items(n=2, size=64, seed=0)))
    assert len(decode_boxes(item.extra["lungs"])) == 2


def marker_drawn(image: np.ndarray) -> bool:
    rows, cols = marker_region(image.shape[0])
    return image[rows, cols].mean() > 150


def test_bias_marker_correlates_as_asked() -> None:
    items = list(make_synthetic_items(n=600, size=64, bias=0.9, seed=5))
    drawn = np.array([marker_drawn(item.load()) for item in items])
    positive = np.array([item.label == "pneumonia" for item in items])
    assert drawn.tolist() == [bool(item.extra["marker"]) for item in items]
    assert 0.85 < drawn[positive].mean() < 0.95
    assert 0.05 < drawn[~positive].mean() < 0.15


def test_no_marker_without_bias() -> None:
    assert not any(
        marker_drawn(item.load()) for item in make_synthetic_items(n=40, size=64, seed=1)
    )


def test_deterministic_from_seed() -> None:
    first = [item.load() for item in make_synthetic_items(n=6, size=64, seed=9)]
    again = [item.load() for item in make_synthetic_items(n=6, size=64, seed=9)]
    other = [item.load() for item in make_synthetic_items(n=6, size=64, seed=10)]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert any((a != b).any() for a, b in zip(first, other, strict=True))


def test_class_balance_is_configurable() -> None:
    labels = [
        item.label for item in make_synthetic_items(n=100, size=32, positive_fraction=0.2, seed=0)
    ]
    assert labels.count("pneumonia") == 20


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"task": "flu"}, "unknown synthetic task 'flu'; allowed: pneumonia, cardiomegaly"),
        ({"bias": 1.5}, "bias must be between 0 and 1"),
    ],
)
def test_bad_synthetic_options(kwargs: dict, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        list(make_synthetic_items(n=4, size=32, **kwargs))


def test_written_layout(synthetic_dataset: Path) -> None:
    table = read_labels(synthetic_dataset)
    assert len(table) == 120 and list(table.columns[:4]) == ["image", "label", "patient_id", "fold"]
    assert sorted(table["fold"].unique()) == [0, 1, 2, 3, 4]
    assert table.groupby("patient_id")["fold"].nunique().max() == 1
    assert table["patient_id"].nunique() < len(table)  # some patients have several images
    positives = table[table["label"] == "pneumonia"]
    assert all(len(decode_boxes(b)) == 1 for b in positives["boxes"])
    assert all(decode_boxes(b) == [] for b in table[table["label"] == "normal"]["boxes"])
    assert pd.read_csv(synthetic_dataset / "skipped.csv").empty
    info = json.loads((synthetic_dataset / "dataset.json").read_text())
    assert info["images"] == 120 and info["source"] == "synthetic" and info["folds"] == 5
    assert not list(synthetic_dataset.parent.glob(".*partial"))
