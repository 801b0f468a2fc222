"""CXR-like phantoms with planted findings and their boxes: the embedded default dataset.

A case is first sampled as plain parameters (`Case`), then rendered; so a test
can render the same case without its finding and check that everything the
finding changed lies inside its box. Rendering order keeps that exact: anatomy,
blur, then the sharp-edged parts (heart, marker, opacity), noise (same noise
seed), clip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cxr.data.dataset import Item
from cxr.data.labels import Box, encode_boxes
from cxr.errors import DataError

TASKS = {
    # task: (positive class, negative class)
    "pneumonia": ("pneumonia", "normal"),
    "cardiomegaly": ("cardiomegaly", "normal"),
}
LUNG_HALF_SPAN = 0.31  # outer lung edge to midline, as a fraction of the image width
HEART_VALUE = 0.62


@dataclass(frozen=True)
class Ellipse:
    """Centre and semi-axes as fractions of the image size."""

    cx: float
    cy: float
    rx: float
    ry: float

    def radius2(self, size: int) -> np.ndarray:
        """Squared normalised radius of every pixel centre (< 1 inside)."""
        centres = (np.arange(size) + 0.5) / size  # broadcast rows against columns: no full grids
        return ((centres[None, :] - self.cx) / self.rx) ** 2 + (
            (centres[:, None] - self.cy) / self.ry
        ) ** 2


@dataclass(frozen=True)
class Case:
    """Everything needed to render one image deterministically."""

    size: int
    body: Ellipse
    lungs: tuple[Ellipse, Ellipse]
    heart: Ellipse | None
    rib_phase: float
    opacity: Ellipse | None
    opacity_strength: float
    marker: bool
    noise_seed: int

    @property
    def cardiothoracic_ratio(self) -> float:
        """Heart width over thoracic width (outer lung edge to outer lung edge)."""
        if self.heart is None:
            return 0.0
        thorax = (self.lungs[1].cx + self.lungs[1].rx) - (self.lungs[0].cx - self.lungs[0].rx)
        return 2 * self.heart.rx / thorax


def sample_case(
    rng: np.random.Generator, size: int, task: str, positive: bool, marker: bool
) -> Case:
    """Draw anatomy with small jitter; plant the task's finding when `positive`."""
    j = lambda scale: rng.uniform(-scale, scale)  # noqa: E731 - tiny local helper
    mid = 0.5 + j(0.015)
    lung_y = 0.47 + j(0.02)
    lung_rx, lung_ry = 0.125 + j(0.01), 0.26 + j(0.02)
    offset = LUNG_HALF_SPAN - lung_rx
    lungs = (
        Ellipse(mid - offset, lung_y, lung_rx, lung_ry),
        Ellipse(mid + offset, lung_y, lung_rx, lung_ry),
    )
    thorax = 2 * LUNG_HALF_SPAN
    enlarged = task == "cardiomegaly" and positive
    ctr = rng.uniform(0.54, 0.66) if enlarged else rng.uniform(0.36, 0.46)
    heart_rx = ctr * thorax / 2
    heart = Ellipse(
        mid + 0.03 + j(0.01),
        lung_y + 0.14 + j(0.02),
        heart_rx,
        0.11 + j(0.01) + 0.3 * (heart_rx - 0.13),
    )
    opacity = None
    if task == "pneumonia" and positive:
        lung = lungs[int(rng.integers(2))]
        opacity = _opacity_inside(rng, lung)
    return Case(
        size=size,
        body=Ellipse(mid, 0.55 + j(0.02), 0.43 + j(0.02), 0.47 + j(0.02)),
        lungs=lungs,
        heart=heart,
        rib_phase=rng.uniform(0, 1),
        opacity=opacity,
        opacity_strength=rng.uniform(0.22, 0.32),
        marker=marker,
        noise_seed=int(rng.integers(2**31)),
    )


def _opacity_inside(rng: np.random.Generator, lung: Ellipse) -> Ellipse:
    """A hazy patch wholly inside the lung field (its bounding box fits in the lung ellipse), so no
    edge of it is cut by the lung border: a cut edge is a sharper feature than the haze itself and
    draws the model's eye."""
    while True:
        rx, ry = rng.uniform(0.06, 0.085), rng.uniform(0.075, 0.11)
        dx, dy = rng.uniform(-0.04, 0.04), rng.uniform(-0.14, 0.14)
        if ((abs(dx) + rx) / lung.rx) ** 2 + ((abs(dy) + ry) / lung.ry) ** 2 <= 1:
            return Ellipse(lung.cx + dx, lung.cy + dy, rx, ry)


def render_case(case: Case) -> tuple[np.ndarray, list[Box]]:
    """Return the (size, size) uint8 image and the tight box of its finding (if any)."""
    size = case.size
    image = np.full((size, size), 0.04)
    image[case.body.radius2(size) < 1] = 0.45
    lung_mask = (case.lungs[0].radius2(size) < 1) | (case.lungs[1].radius2(size) < 1)
    image[lung_mask] = 0.16
    image += _ribs(case, lung_mask)
    spine = np.abs((np.arange(size) + 0.5) / size - case.body.cx) < 0.035
    image[:, spine] += 0.12 * (case.body.radius2(size)[:, spine] < 1)
    image = _blur(image, sigma=size / 256)
    if case.heart is not None:
        alpha = _heart_alpha(case.heart, size)
        image = image * (1 - alpha) + HEART_VALUE * alpha
    if case.marker:
        _draw_marker(image, size)
    if case.opacity is not None:
        image += case.opacity_strength * _opacity_profile(case, lung_mask)
    image += np.random.default_rng(case.noise_seed).normal(0, 0.025, image.shape)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), finding_boxes(case)


def lung_boxes(case: Case) -> list[Box]:
    """The lung fields' bounding boxes, in pixels: where a chest finding's evidence belongs."""
    return [_tight_box(lung.radius2(case.size) < 1, "lung") for lung in case.lungs]


def finding_boxes(case: Case) -> list[Box]:
    """Tight boxes: the enlarged heart (CTR > 0.5) and the opacity where it lies inside the
    lungs."""
    size = case.size
    boxes: list[Box] = []
    if case.heart is not None and case.cardiothoracic_ratio > 0.5:
        boxes.append(_tight_box(_heart_alpha(case.heart, size) > 0, "cardiomegaly"))
    if case.opacity is not None:
        lung_mask = (case.lungs[0].radius2(size) < 1) | (case.lungs[1].radius2(size) < 1)
        boxes.append(_tight_box(_opacity_profile(case, lung_mask) > 0, "pneumonia"))
    return boxes


def _opacity_profile(case: Case, lung_mask: np.ndarray) -> np.ndarray:
    """Hazy dome, strongest at the centre, confined to the lung fields."""
    assert case.opacity is not None
    return np.clip(1 - case.opacity.radius2(case.size), 0, 1) ** 0.7 * lung_mask


def _heart_alpha(heart: Ellipse, size: int) -> np.ndarray:
    """Opaque heart with a soft rim that stays inside its ellipse (so its box is exact)."""
    return np.clip((1 - heart.radius2(size)) / 0.15, 0, 1)


def _ribs(case: Case, lung_mask: np.ndarray) -> np.ndarray:
    """Faint curved bands across the lung fields."""
    size = case.size
    coords = np.arange(size) / size
    curve = coords[:, None] - 0.9 * (coords[None, :] - case.body.cx) ** 2
    bands = np.cos(2 * np.pi * (curve / 0.075 + case.rib_phase))
    return 0.07 * (bands > 0.6) * lung_mask


def _draw_marker(image: np.ndarray, size: int) -> None:
    """A bright 'L'-shaped tag in the top-left corner: the shortcut a biased model can learn."""
    a, b, t = round(0.04 * size), round(0.14 * size), max(2, round(0.025 * size))
    image[a:b, a : a + t] = 0.97
    image[b - t : b, a : a + round(0.07 * size)] = 0.97


def marker_region(size: int) -> tuple[slice, slice]:
    """Rows and columns the marker is drawn in (for tests and audits)."""
    a, b = round(0.04 * size), round(0.14 * size)
    return slice(a, b), slice(a, a + round(0.07 * size))


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter(image, sigma)


def _tight_box(mask: np.ndarray, label: str) -> Box:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return Box(
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
        label,
    )


def make_synthetic_items(
    n: int = 400,
    size: int = 256,
    task: str = "pneumonia",
    positive_fraction: float = 0.5,
    bias: float | None = None,
    seed: int = 0,
) -> Iterator[Item]:
    """Yield `n` phantoms; patients have 1-3 images each; `bias` P puts the marker on positives
    with probability P and on negatives with 1-P (None: no markers at all)."""
    if task not in TASKS:
        raise DataError(f"unknown synthetic task {task!r}; allowed: {', '.join(TASKS)}")
    if not 0 < positive_fraction < 1:
        raise DataError(
            f"positive fraction must be between 0 and 1 (exclusive), got {positive_fraction}"
        )
    if bias is not None and not 0 <= bias <= 1:
        raise DataError(f"bias must be between 0 and 1, got {bias}")
    if not 32 <= size <= 2048:
        raise DataError(f"synthetic image size must be between 32 and 2048, got {size}")
    positive_name, negative_name = TASKS[task]
    rng = np.random.default_rng(seed)
    n_pos = round(n * positive_fraction)
    labels = rng.permutation(np.arange(n) < n_pos)
    patient, left = 0, 0
    for index, positive in enumerate(labels):
        if left == 0:
            patient, left = patient + 1, int(rng.integers(1, 4))
        left -= 1
        marker = bias is not None and bool(rng.random() < (bias if positive else 1 - bias))
        case = sample_case(rng, size, task, bool(positive), marker)
        yield Item(
            image=f"images/syn_{index:05d}.png",
            load=lambda case=case: render_case(case)[0],
            label=positive_name if positive else negative_name,
            patient_id=f"P{patient:05d}",
            boxes=finding_boxes(case),
            extra={
                "marker": int(marker),
                "ctr": round(case.cardiothoracic_ratio, 3),
                "lungs": encode_boxes(lung_boxes(case)),
            },
            origin=f"synthetic #{index}",
        )
