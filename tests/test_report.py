"""The fold summary's localisation baselines, computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.data.labels import Box
from cxr.explain.report import LOCALISATION_SEED, inside, inside_any, summarise_fold


def test_inside_any_is_inside_for_every_pixel() -> None:
    rng = np.random.default_rng(3)
    boxes = [Box(2.0, 3.0, 4.5, 2.0), Box(5.0, 0.0, 1.0, 9.0)]
    xs, ys = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    expected = [inside(x, y, boxes) for x, y in zip(xs, ys, strict=True)]
    assert inside_any(xs, ys, boxes).tolist() == expected
    assert not inside_any(xs, ys, []).any()


def test_localisation_baselines_by_hand() -> None:
    """A 10x10 image whose box is its left half: the centre (4.5, 4.5) is inside, and a random
    pixel is inside when its x is below 5."""
    box = [Box(0.0, 0.0, 5.0, 10.0)]
    report = pd.DataFrame(
        {
            "image": ["a", "b"],
            "correct": ["right", "right"],
            "empty": [False, False],
            "outcome": ["TP", "TN"],
            "boxes": [box, []],
            "width": [10, 10],
            "height": [10, 10],
            "peak_in_box": [1.0, np.nan],
            "box_energy_share": [0.75, np.nan],
        }
    )
    found = summarise_fold(report)["localisation"]
    rng = np.random.default_rng(LOCALISATION_SEED)
    xs = rng.integers(0, 10, 100)
    assert found["true_positives_with_boxes"] == 1 and found["centre_baseline"] == 1.0
    assert found["random_baseline"] == np.mean(xs < 5)
    assert found["peak_in_box"] == 1.0 and found["mean_box_energy_share"] == 0.75
