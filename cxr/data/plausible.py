"""Is a predicted lung mask believable? Two main fields, a normal area, side by side.

A mask that fails is listed and left out of the audit's lung statistics rather than trusted: a
segmentation model fails quietly on films unlike its training set (a lateral view, an abdomen, a
child's film cropped differently), and a wrong lung field would make a wrong shortcut verdict.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Lung area as a share of the image in the 704 training masks is 8-43% (median 25%); a little margin
# each side.
AREA_RANGE = (0.06, 0.50)
MAIN_COMPONENT = 0.05  # a component is a main one when it holds at least this share of the mask
MAX_VERTICAL_OFFSET = 0.25  # the two fields' centres differ by at most this share of the height
MIN_HORIZONTAL_GAP = 0.15  # ... and by at least this share of the width


def mask_problem(mask: np.ndarray) -> str:
    """'' for a plausible mask, else what is wrong with it, in a few words."""
    height, width = mask.shape
    area = np.count_nonzero(mask) / mask.size
    if not AREA_RANGE[0] <= area <= AREA_RANGE[1]:
        return f"lung area {area:.0%} of the image, outside {AREA_RANGE[0]:.0%}-{AREA_RANGE[1]:.0%}"
    labels, count = ndimage.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]  # one pass, however many specks
    main = [int(i) + 1 for i in np.flatnonzero(sizes >= MAIN_COMPONENT * sizes.sum())]
    if len(main) != 2:
        return f"{len(main)} main component(s), expected two lung fields"
    (y0, x0), (y1, x1) = (_centre(labels == main_label) for main_label in main)
    if abs(y0 - y1) > MAX_VERTICAL_OFFSET * height or abs(x0 - x1) < MIN_HORIZONTAL_GAP * width:
        return "the two fields are not side by side"
    return ""


def _centre(component: np.ndarray) -> tuple[float, float]:
    """Centre of mass (row, column) from the row and column counts: ndimage.center_of_mass
    multiplies the whole image by a grid per axis, 20 times slower on a 256 px mask."""
    height, width = component.shape
    count = np.count_nonzero(component)
    rows = np.count_nonzero(component, axis=1) @ np.arange(height) / count
    columns = np.count_nonzero(component, axis=0) @ np.arange(width) / count
    return float(rows), float(columns)
