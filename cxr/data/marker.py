"""A burned-in tag for controlled shortcut experiments on real radiographs.

`cxr download folder --inject-marker P`.

The real-radiograph twin of the synthetic `--bias`: a small text-like tag (a bright box with dark
strokes, like a burned-in side marker) in the top-left corner of positives with probability P and of
negatives with probability 1 - P, recorded in labels.csv's `marker` column. A model that learns the
tag instead of the lungs is what `cxr audit` must catch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from cxr.data.dataset import Item
from cxr.data.labels import is_negative_class


def burn_marker(image: np.ndarray) -> np.ndarray:
    """A copy of the (H, W) uint8 image with the tag in its top-left corner."""
    out = image.copy()
    height, width = out.shape
    y0, x0, box_h, box_w = (
        round(0.03 * height),
        round(0.03 * width),
        round(0.06 * height),
        round(0.12 * width),
    )
    out[y0 : y0 + box_h, x0 : x0 + box_w] = 235
    stroke = max(1, round(0.01 * width))
    top, bottom = y0 + round(0.2 * box_h), y0 + round(0.8 * box_h)
    for k in range(3):  # three letter-like strokes
        x = x0 + round((0.15 + 0.28 * k) * box_w)
        out[top:bottom, x : x + stroke] = 30
        out[top : top + stroke, x : x + round(0.18 * box_w)] = 30
    return out


def inject_markers(items: Iterable[Item], probability: float, seed: int) -> Iterator[Item]:
    """Tag positives with `probability`, negatives with 1 - `probability` (seeded); record it."""
    rng = np.random.default_rng(seed)
    for item in items:
        positive = not is_negative_class(item.label)
        marked = bool(rng.random() < (probability if positive else 1 - probability))
        if marked:
            item.load = lambda load=item.load: burn_marker(load())
        item.extra["marker"] = int(marked)
        yield item
