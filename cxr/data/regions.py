"""The regions of a radiograph around its lung fields: every pixel in one of them.

Inside a lung; a corner (the four squares of 15% of each side, where side markers and text tags
sit); the rest of the border band (the outer 10% of each side); above the lungs (neck,
shoulders); below them (abdomen); between them (mediastinum and heart); or beside them (arms,
chest wall). The geometry only: explain names each map's peak region with it, and the audit's
region rule (cxr.audit.regions) judges a class's maps by it.
"""

from __future__ import annotations

import numpy as np

# of the image as stored (the film's own sides)
CORNERS = (
    "top_left",
    "top_right",
    "bottom_left",
    "bottom_right",
)
REGIONS = ("lung", "between", "above", "below", "beside", "border", *CORNERS)
OFF_CHEST = (*CORNERS, "border", "above", "below", "beside")  # no chest finding lies here
REGION_WORDS = {
    "lung": "inside the lungs",
    "between": "between the lungs",
    "above": "above the lungs",
    "below": "below the lungs",
    "beside": "beside the lungs",
    "border": "in the border band",
    **{c: f"in the {c.replace('_', '-')} corner" for c in CORNERS},
}
BORDER = 0.1
CORNER = 0.15


def region_codes(lungs: np.ndarray) -> np.ndarray:
    """(H, W) int array: the index in REGIONS of every pixel, from a boolean lung mask."""
    height, width = lungs.shape
    codes = np.full(lungs.shape, REGIONS.index("beside"), dtype=np.int8)
    # the lungs' bounding box from their rows and columns (nonzero over every pixel took 0.17 ms of
    # each overlay's 2)
    rows, cols = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
    if len(rows):
        top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        codes[:, left : right + 1] = REGIONS.index("between")
        codes[:top] = REGIONS.index("above")
        codes[bottom + 1 :] = REGIONS.index("below")
    band = np.zeros(lungs.shape, dtype=bool)
    dy, dx = round(BORDER * height), round(BORDER * width)
    band[:dy], band[height - dy :], band[:, :dx], band[:, width - dx :] = True, True, True, True
    codes[band] = REGIONS.index("border")
    cy, cx = round(CORNER * height), round(CORNER * width)
    upper, lower = slice(0, cy), slice(height - cy, height)
    near, far = slice(0, cx), slice(width - cx, width)
    for name, corner in zip(
        CORNERS, ((upper, near), (upper, far), (lower, near), (lower, far)), strict=True
    ):
        codes[corner] = REGIONS.index(name)
    codes[lungs] = REGIONS.index("lung")  # a lung reaching into the band is still lung
    return codes
