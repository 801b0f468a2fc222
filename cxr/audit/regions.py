"""Where in the chest does a map look? Peak regions and energy per region, against a uniform map.

Given an image's lung fields, every pixel falls in one region: inside a lung; a corner (the four
squares of 15% of each side, where side markers and text tags sit); the rest of the border band (the
outer 10% of each side); above the lungs (neck, shoulders); below them (abdomen); between them
(mediastinum and heart); or beside them (arms, chest wall). A map is summarised by where its peak
falls and by the share of its energy outside the lungs, each next to what a uniform map over the
same image gives: the regions' shares of the image, and 1 - the lung area fraction.

A class is flagged when, in one region where no chest finding lies (a corner, the border, above,
below or beside the lungs), its maps' peaks fall far more often than a uniform map's would (at least
20% of peaks and three times the region's area share, the bootstrap interval over patients above
it), or its maps hold far more of their energy than a uniform map would (at least 5% and three times
the region's area share, the interval above it); or when its maps put clearly more energy outside
the chest (the lungs and the space between them) than a uniform map (0.15 more, the interval above
zero). The four corners are separate regions: a tag sits in one of them, and its energy would be
diluted over all four. The energy rule catches a shortcut that shares the map with real evidence
(the peak in a lung, a second hot spot on the tag): on the synthetic shortcut demo the biased
model's pneumonia maps hold 11% of their energy in the top-left corner (2% of the image), the clean
model's 0.1%. The space between the lungs counts as chest: the heart is there, so a cardiomegaly
model must look there, and is never flagged for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr import stats
from cxr.data.regions import OFF_CHEST, REGION_WORDS, REGIONS, region_codes
from cxr.explain.report import peak_location
from cxr.results.audit import Estimate, Excess, RegionGroup, Regions, Share

PEAK_SHARE = 0.20  # a region holding at least this share of a class's peaks ...
PEAK_RATIO = 3.0  # ... and this many times a uniform map's share is flagged
ENERGY_SHARE = (
    0.05  # or holding this share of the maps' energy and PEAK_RATIO times a uniform map's
)
ENERGY_EXCESS = 0.15  # energy outside the chest this much above a uniform map's is flagged
MOSTLY_OUTSIDE = (
    0.5  # reported: the share of maps holding more than this of their energy outside the chest
)
BOOTSTRAP = 2000


def map_regions(heatmap: np.ndarray, lungs: np.ndarray) -> dict:
    """One map against its image's lung fields: peak region, energy shares, and a uniform map's."""
    codes = region_codes(lungs)
    x, y = peak_location(heatmap)
    total = float(heatmap.sum())
    chest = (codes == REGIONS.index("lung")) | (codes == REGIONS.index("between"))
    row: dict = {
        "peak_region": REGIONS[codes[y, x]] if total > 0 else "",
        "outside_lungs": float(heatmap[~lungs].sum() / total) if total > 0 else float("nan"),
        "uniform_outside_lungs": float(1 - lungs.mean()),
        "outside_chest": float(heatmap[~chest].sum() / total) if total > 0 else float("nan"),
        "uniform_outside_chest": float(1 - chest.mean()),
    }
    row |= {f"chance_{name}": float((codes == i).mean()) for i, name in enumerate(REGIONS)}
    row |= {
        f"energy_{name}": float(heatmap[codes == i].sum() / total) if total > 0 else float("nan")
        for i, name in enumerate(REGIONS)
    }
    return row


def patient_bootstrap(
    values: np.ndarray, patients: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the mean of `values`, resampling patients (not images) with replacement."""
    return stats.interval(stats.resampled_means(values, patients, BOOTSTRAP, seed))


def summarise_group(part: pd.DataFrame) -> RegionGroup:
    """Peak shares per region (with chance rates), energy outside lungs and chest, intervals."""
    patients = part["patient_id"].astype(str).to_numpy()

    def share(values: np.ndarray, uniform: float) -> Share:
        return Share(float(values.mean()), *patient_bootstrap(values, patients), uniform)

    peaks, energy = {}, {}
    for name in REGIONS:
        uniform = float(part[f"chance_{name}"].mean())
        peaks[name] = share((part["peak_region"] == name).to_numpy(dtype=float), uniform)
        energy[name] = share(part[f"energy_{name}"].fillna(0).to_numpy(dtype=float), uniform)
    mostly = (part["outside_chest"] > MOSTLY_OUTSIDE).to_numpy(dtype=float)
    outside = {}
    for what in ("lungs", "chest"):
        excess = (part[f"outside_{what}"] - part[f"uniform_outside_{what}"]).to_numpy()
        outside[what] = Excess(
            float(part[f"outside_{what}"].mean()),
            float(part[f"uniform_outside_{what}"].mean()),
            *patient_bootstrap(excess, patients),
        )
    return RegionGroup(
        images=len(part),
        peaks=peaks,
        energy=energy,
        mostly_outside_chest=Estimate(float(mostly.mean()), *patient_bootstrap(mostly, patients)),
        outside_lungs=outside["lungs"],
        outside_chest=outside["chest"],
    )


def flags_of(group: RegionGroup) -> list[str]:
    """The reasons a class's maps are flagged (none when they look where chest findings lie)."""
    reasons = []
    for name in OFF_CHEST:
        peak, energy = group.peaks[name], group.energy[name]
        if (
            peak.share >= PEAK_SHARE
            and peak.share >= PEAK_RATIO * peak.uniform
            and peak.low > peak.uniform
        ):
            reasons.append(
                f"{peak.share:.0%} of peaks {REGION_WORDS[name]} (uniform map: {peak.uniform:.0%})"
            )
        elif (
            energy.share >= max(ENERGY_SHARE, PEAK_RATIO * energy.uniform)
            and energy.low > energy.uniform
        ):
            reasons.append(
                f"{energy.share:.0%} of the maps' energy {REGION_WORDS[name]} "
                f"(uniform map: {energy.uniform:.0%})"
            )
    chest = group.outside_chest
    if chest.mean - chest.uniform >= ENERGY_EXCESS and chest.excess_low > 0:
        reasons.append(
            f"{chest.mean:.0%} of the maps' energy outside the chest "
            f"(uniform map: {chest.uniform:.0%})"
        )
    return reasons


def summarise_regions(rows: pd.DataFrame) -> Regions:
    """Per predicted class (with flags) and per outcome, over images with known lung fields."""
    known = rows[rows["peak_region"].astype(str) != ""]
    per_class = {str(k): summarise_group(p) for k, p in known.groupby("predicted_class")}
    per_outcome = {}
    if "outcome" in known:
        with_outcome = known[known["outcome"].astype(str) != ""]
        per_outcome = {str(k): summarise_group(p) for k, p in with_outcome.groupby("outcome")}
    flags = {name: reasons for name, group in per_class.items() if (reasons := flags_of(group))}
    return Regions(len(known), per_class, per_outcome, flags)
