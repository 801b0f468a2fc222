"""What `cxr explain` returns and writes to each fold's summary.json, as typed records
(cxr.results.records for the JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from cxr.results.records import optional


@dataclass(frozen=True)
class MapLocalisation:
    """Where true positives' maps peak against their boxes, beside two maps that know nothing: one
    that peaks at the image centre and one at a random pixel."""

    true_positives_with_boxes: int
    peak_in_box: float
    centre_baseline: float
    random_baseline: float
    mean_box_energy_share: float


@dataclass(frozen=True)
class Agreement:
    """--fold-agreement: the fold's maps beside every other trained fold's maps of its images."""

    images: int
    other_folds: str
    median_rank_correlation: float
    median_probability_std: float
    most_disagreeing: list[str]


@dataclass(frozen=True, kw_only=True)
class ExplainSummary:
    """One fold's explanation: counts of right and wrong maps, localisation, and the settings the
    maps were made with."""

    images: int
    rows: int  # more than images when several classes are explained per image
    right: int
    wrong: int
    empty_maps: int
    outcomes: dict[str, int] = optional({})  # TP, FP, TN, FN of a binary task
    localisation: MapLocalisation | None = optional()
    fold: int
    method: str
    layer: str
    target: str
    model_sha256: str  # a retrained fold never reuses the old model's maps
    fold_agreement: Agreement | None = optional()

    @property
    def several_per_image(self) -> bool:
        return self.rows != self.images
