"""What each audit returns: small typed records that the printed summary, the model card,
methods.csv and summary.json all come from, so they cannot disagree and a reader of any finds the
same names.

A score the audit gives each method (localisation, faithfulness, sanity, map properties, ROAD) is
one record class here with everything said of it: its fields, its line on the terminal (`line`),
on the model card (`card_line`, None: not on the card) and its columns in methods.csv
(`columns`); AuditSummary holds one field of them per score, marked `SCORE`, in the order they
are shown. cxr.audit.parts computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np
import pandas as pd

from cxr.results.records import NOT_SAVED, num, to_json

SCORE = {"score": True}  # AuditSummary's field metadata: one record per method, shown in order

BASELINES = ("random", "centre")  # maps that know nothing of the image (cxr.audit.localisation)


class Score(Protocol):
    """A score the audit gives one method (or baseline map), and all that is said of it."""

    def line(self, method: str, folds: int | None) -> str:
        """Its line on the terminal; `folds`: how many folds it is pooled over (None: one)."""
        ...

    def card_line(self, method: str) -> str | None:
        """Its line on the model card (None: not there)."""
        ...

    def columns(self) -> dict[str, object]:
        """Its columns in methods.csv (every method side by side)."""
        ...


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap 95% interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Localisation:
    """One method's (or baseline's) scores against the boxes, over the images that have boxes."""

    images: int
    scores: dict[str, Estimate]  # pointing_hit, iou@0.25, iou@0.5, iou@otsu, iobb, t(iobb)@T

    def line(self, method: str, folds: int | None) -> str:
        hit = self.scores["pointing_hit"]
        return (
            f"{method:>12}: pointing game {hit.mean:.2f} [{hit.low:.2f}, {hit.high:.2f}], "
            f"IoU@otsu {self.scores['iou@otsu'].mean:.2f}, "
            f"T(IoBB)@0.25 {self.scores['t(iobb)@0.25'].mean:.2f} "
            f"({self.images} images with boxes)"
        )

    def card_line(self, method: str) -> str | None:
        return (
            f"{method}: pointing game {num(self.scores['pointing_hit'].mean, '.2f')} "
            f"({self.images} images with boxes)"
        )

    def columns(self) -> dict[str, object]:
        return {
            "pointing_game": self.scores["pointing_hit"].mean,
            "iou_otsu": self.scores["iou@otsu"].mean,
            "t_iobb_0.25": self.scores["t(iobb)@0.25"].mean,
        }


@dataclass(frozen=True)
class Sanity:
    """The model-parameter randomisation check of one method, at its last (deepest) stage."""

    stages: int
    randomised_down_to: str
    last_stage_spearman: float
    unrelated_pairs_spearman: float
    passes: bool
    folds_passing: int | None = None  # pooled over folds: in how many it passes

    def line(self, method: str, folds: int | None) -> str:
        verdict = "passes" if self.passes else "FAILS"
        if folds is not None:
            verdict += f" (in {self.folds_passing} of {folds} folds)"
        return (
            f"{method:>12}: randomised model's maps rank-correlate "
            f"{'on average ' if folds is not None else ''}{self.last_stage_spearman:.2f} with the "
            f"trained ones after {self.stages} stages (unrelated images: "
            f"{self.unrelated_pairs_spearman:.2f}): {verdict}"
        )

    def card_line(self, method: str) -> str | None:
        return (
            f"{method}: randomisation sanity check {'passes' if self.passes else 'FAILS'} (rank "
            f"correlation {num(self.last_stage_spearman, '.2f')} after {self.stages} stages)"
        )

    def columns(self) -> dict[str, object]:
        return {"randomised_spearman": self.last_stage_spearman, "sanity_passes": self.passes}


@dataclass(frozen=True)
class Faithfulness:
    """Mean areas under one method's deletion and insertion curves."""

    images: int
    deletion_auc: float
    insertion_auc: float
    baseline: str

    def line(self, method: str, folds: int | None) -> str:
        return (
            f"{method:>12}: deletion area {self.deletion_auc:.3f} (lower is better), insertion "
            f"area {self.insertion_auc:.3f} ({self.baseline} baseline, {self.images} images)"
        )

    def card_line(self, method: str) -> str | None:
        return (
            f"{method}: deletion area {num(self.deletion_auc)}, insertion area "
            f"{num(self.insertion_auc)} ({self.baseline} baseline)"
        )

    def columns(self) -> dict[str, object]:
        return {"deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc}


@dataclass(frozen=True)
class Road:
    """ROAD (cxr.audit.road): the target probability with pixels imputed, most relevant first
    (MoRF, lower is more faithful) and least relevant first (LeRF, higher), means over shares."""

    images: int
    shares: list[float]
    morf: float
    lerf: float
    gap: float  # LeRF - MoRF: higher is more faithful; about 0 for a map that knows nothing

    def line(self, method: str, folds: int | None) -> str:
        return (
            f"{method:>12}: ROAD, target probability with "
            f"{self.shares[0]:.0%}-{self.shares[-1]:.0%} of pixels imputed: most relevant first "
            f"{self.morf:.3f} (lower is better), least relevant first {self.lerf:.3f}, gap "
            f"{self.gap:+.3f} (higher is better)"
        )

    def card_line(self, method: str) -> str | None:
        return None

    def columns(self) -> dict[str, object]:
        return {"road_morf": self.morf, "road_lerf": self.lerf, "road_gap": self.gap}


@dataclass(frozen=True)
class MapMetrics:
    """One method's (or baseline map's) maps on the sample (cxr.audit.mapmetrics)."""

    images: int
    average_drop: float  # %, lower is better
    increase_in_confidence: float  # % of images, higher is better
    sparseness: float  # Gini index, 0 even to 1 one pixel
    complexity: float  # entropy over its maximum, 1 uniform
    random_logit_spearman: float  # NaN for a baseline map; lower: the map follows the class
    max_sensitivity: float  # NaN for a baseline map; lower: the map is robust to small noise

    def line(self, method: str, folds: int | None) -> str:
        logit = (
            ""
            if self.random_logit_spearman != self.random_logit_spearman  # NaN: a baseline map
            else f", random-logit rank correlation {self.random_logit_spearman:.2f}, "
            f"max-sensitivity {self.max_sensitivity:.2f}"
        )
        return (
            f"{method:>12}: average drop {self.average_drop:.1f}%, increase in confidence "
            f"{self.increase_in_confidence:.0f}%, sparseness {self.sparseness:.2f}, complexity "
            f"{self.complexity:.2f}{logit}"
        )

    def card_line(self, method: str) -> str | None:
        return None

    def columns(self) -> dict[str, object]:
        return {
            "average_drop": self.average_drop,
            "increase_in_confidence": self.increase_in_confidence,
            "sparseness": self.sparseness,
            "complexity": self.complexity,
            "random_logit_spearman": self.random_logit_spearman,
            "max_sensitivity": self.max_sensitivity,
        }


@dataclass(frozen=True)
class Share:
    """A share of maps (peaks) or of their energy in one region, next to a uniform map's."""

    share: float
    low: float
    high: float
    uniform: float


@dataclass(frozen=True)
class Excess:
    """Energy outside a region (lungs, chest) next to a uniform map's, the excess's interval."""

    mean: float
    uniform: float
    excess_low: float
    excess_high: float


@dataclass(frozen=True)
class RegionGroup:
    """Where one group's maps (a predicted class, an outcome) look, region by region."""

    images: int
    peaks: dict[str, Share]
    energy: dict[str, Share]
    mostly_outside_chest: Estimate
    outside_lungs: Excess
    outside_chest: Excess

    def most_above_uniform(self, regions: Sequence[str]) -> str:
        """Of `regions`, the one whose share of peaks most exceeds a uniform map's."""
        return max(regions, key=lambda r: self.peaks[r].share - self.peaks[r].uniform)


@dataclass(frozen=True)
class Regions:
    """The region rule's view: per predicted class (with the reasons it is flagged), per outcome."""

    images: int
    per_class: dict[str, RegionGroup]
    per_outcome: dict[str, RegionGroup]
    flags: dict[str, list[str]]


@dataclass(frozen=True)
class ClassShortcut:
    """One predicted class under the share-outside rule."""

    images: int
    mean_outside_share: float
    flagged_share: float


@dataclass(frozen=True)
class Intervention:
    """One region filled on the images of one called class (cxr.audit.intervention)."""

    images: int
    change: Estimate  # of the called class's probability when the region is filled
    control: Estimate  # ... when as many pixels are filled in the control patch
    difference: Estimate  # change - control, paired per image
    flipped: float  # share of the calls that change when the region is filled
    flagged: bool  # an off-chest region costing more than the control by at least the margin


@dataclass(frozen=True)
class Paste:
    """The reverse test of a flagged corner or border: that region of the flagged class's films
    pasted onto the other class's (cxr.audit.intervention)."""

    images: int
    change: Estimate  # of the flagged class's probability on the other class's films
    turned: float  # share of those films whose call turns to the flagged class


def flagged_regions(interventions: dict[str, dict[str, Intervention]]) -> dict[str, list[str]]:
    """Called class -> the regions flagged on evidence (classes without any left out)."""
    found = {
        name: [region for region, i in regions.items() if i.flagged]
        for name, regions in interventions.items()
    }
    return {name: regions for name, regions in found.items() if regions}


@dataclass(frozen=True)
class Shortcuts:
    """The shortcut audit of one method's maps of the predicted class."""

    method: str
    rule: str  # "regions" when most lung fields are known, else "border band"
    images: int
    mean_outside_share: float
    flagged_share: float
    per_class: dict[str, ClassShortcut]
    flagged_classes: list[str]
    regions: Regions | None = None
    implausible_lungs: int = 0  # images whose lung mask failed the check: judged by the border band

    @property
    def model_flagged(self) -> bool:
        return bool(self.flagged_classes)


@dataclass(frozen=True)
class AuditSummary:
    """Every audit of one fold (`fold` set) or pooled over folds (`fold` None)."""

    fold: int | None
    folds: list[int]
    layer: str
    localisation: dict[str, Localisation] = field(metadata=SCORE)
    faithfulness: dict[str, Faithfulness] = field(metadata=SCORE)
    sanity: dict[str, Sanity] = field(metadata=SCORE)
    shortcuts: Shortcuts
    sample: list[str] = field(default_factory=list)  # the sanity and faithfulness images
    # properties of the maps
    maps: dict[str, MapMetrics] = field(default_factory=dict, metadata=SCORE)
    # faithfulness with debiased removal
    road: dict[str, Road] = field(default_factory=dict, metadata=SCORE)
    # what the decision depends on: called class -> region -> its fill against the control
    interventions: dict[str, dict[str, Intervention]] = field(default_factory=dict)
    pastes: dict[str, dict[str, Paste]] = field(default_factory=dict)  # flagged class -> region

    def scores(self) -> dict[str, dict[str, Score]]:
        """Each score the audit gives the methods (its field's name -> method -> record), in the
        order they are shown."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("score")}

    @property
    def flagged_on_evidence(self) -> dict[str, list[str]]:
        """Called class -> the off-chest regions whose fill costs it clearly more than the
        control."""
        return flagged_regions(self.interventions)

    @property
    def best_method(self) -> str | None:
        """The method (not a baseline) with the highest pointing game, if it beats both baselines
        (the random map and the centre map); None when none does or no image has a box."""
        methods = [m for m in self.localisation if m not in BASELINES]
        if not methods:
            return None
        score = {m: self.localisation[m].scores["pointing_hit"].mean for m in self.localisation}
        best = max(methods, key=score.__getitem__)
        beaten = all(score[best] > score[b] for b in BASELINES if b in score)
        return best if beaten else None

    def to_json(self) -> dict:
        """summary.json: the record as it is, with the derived verdicts spelled out."""
        data = to_json(self)
        data["best_method_by_pointing_game"] = self.best_method
        data["shortcuts"]["model_flagged"] = self.shortcuts.model_flagged
        data["flagged_on_evidence"] = self.flagged_on_evidence
        return data


@dataclass(frozen=True)
class DataCheck:
    """One method: the mean rank correlation and SSIM of the two models' maps."""

    images: int
    spearman: float
    ssim: float
    passes: bool


@dataclass(frozen=True)
class DataRandomisation:
    """The data randomisation check of one fold (cxr.data_randomisation): the maps of a copy
    trained on permuted labels against the real model's (data_randomisation.json)."""

    fold: int
    epochs: int
    labels_changed: float  # share of training images whose label the permutation changed
    pass_below: float  # a method passes when its maps rank-correlate less than this
    checks: dict[str, DataCheck]
    rows: pd.DataFrame = field(default_factory=pd.DataFrame, metadata=NOT_SAVED)  # per image
    # method -> (trained, permuted) maps
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, metadata=NOT_SAVED)
