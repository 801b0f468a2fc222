"""The fold summary's localisation baselines, computed by hand; the predicted-class rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.data.labels import Box
from cxr.explain.report import (
    LOCALISATION_SEED,
    class_probabilities,
    inside,
    inside_any,
    predicted_classes,
    summarise_fold,
)


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
    assert found.true_positives_with_boxes == 1 and found.centre_baseline == 1.0
    assert found.random_baseline == np.mean(xs < 5)
    assert found.peak_in_box == 1.0 and found.mean_box_energy_share == 0.75


def test_predicted_classes_of_both_heads() -> None:
    assert predicted_classes(np.array([[0.3], [-0.2], [0.0]])).tolist() == [1, 0, 0]
    assert predicted_classes(np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0]])).tolist() == [1, 0]
    # a tie goes to the first class
    assert predicted_classes(np.array([[1.0, 3.0, 3.0]])).tolist() == [1]


def test_the_report_predicts_the_class_the_maps_explain() -> None:
    """The report's predicted class follows the maps' 'predicted' target (resolve_targets, in
    TensorFlow) on random logits, ties, and logits whose probabilities tie in float32."""
    import tensorflow as tf

    from cxr.explain.methods import resolve_targets

    rng = np.random.default_rng(0)
    cases = [
        rng.normal(size=(64, 3)).astype(np.float32),
        rng.integers(-1, 2, size=(64, 4)).astype(np.float32),  # many ties
        rng.normal(size=(64, 1)).astype(np.float32),
        np.array([[1e-9], [-1e-9], [0.0]], dtype=np.float32),
        np.array([[30.0, 30.000002, -5.0]], dtype=np.float32),
    ]
    for logits in cases:
        asked = tf.fill([len(logits)], -1)
        expected = resolve_targets(tf.constant(logits), asked).numpy()
        np.testing.assert_array_equal(predicted_classes(logits), expected)
    # where the argmax of the probabilities would have said otherwise
    tiny = np.array([[1e-9]], dtype=np.float32)
    assert class_probabilities(tiny).argmax(axis=1).tolist() == [0]
    assert predicted_classes(tiny).tolist() == [1]
