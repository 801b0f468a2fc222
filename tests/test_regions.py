"""Peak regions and energy outside the lungs against a uniform map; flags and bootstrap by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr.audit.regions import flags_of, map_regions, patient_bootstrap, summarise_regions
from cxr.data.regions import REGIONS, region_codes


def two_lungs(size: int = 100) -> np.ndarray:
    lungs = np.zeros((size, size), dtype=bool)
    lungs[30:70, 20:40] = True  # the image's right lung (left on the film)
    lungs[30:70, 60:80] = True
    return lungs


def test_region_of_each_pixel_by_hand() -> None:
    codes = region_codes(two_lungs())
    name = lambda y, x: REGIONS[codes[y, x]]  # noqa: E731
    assert name(50, 30) == "lung" and name(50, 50) == "between" and name(20, 50) == "above"
    assert (
        name(80, 50) == "below"
        and name(50, 15) == "beside"
        and name(3, 50) == "border"
        and name(50, 97) == "border"
    )
    assert name(97, 97) == "bottom_right" and name(2, 2) == "top_left" and name(50, 30) == "lung"


def test_a_uniform_map_scores_its_own_baseline_and_a_peak_its_region() -> None:
    lungs = two_lungs()
    uniform = map_regions(np.ones((100, 100)), lungs)
    assert (
        uniform["outside_lungs"]
        == pytest.approx(uniform["uniform_outside_lungs"])
        == pytest.approx(1 - 0.16)
    )
    chances = [uniform[f"chance_{r}"] for r in REGIONS]
    assert sum(chances) == pytest.approx(1) and uniform["chance_lung"] == pytest.approx(0.16)
    neck = np.zeros((100, 100))
    neck[15, 50] = 1.0
    row = map_regions(neck, lungs)
    assert row["peak_region"] == "above" and row["outside_lungs"] == 1 and row["outside_chest"] == 1
    heart = np.zeros((100, 100))
    heart[50, 50] = 1.0
    # between the lungs is chest: the heart is there
    assert map_regions(heart, lungs)["outside_chest"] == 0


def test_bootstrap_resamples_patients_not_images() -> None:
    """Four images of patient a (value 1), one of b (0): a resample has all of a's four or none."""
    values, patients = np.array([1.0, 1, 1, 1, 0]), np.array(["a", "a", "a", "a", "b"])
    low, high = patient_bootstrap(values, patients)
    # only 0, 0.8 or 1 can occur; by image the interval would be far narrower
    assert (low, high) == (
        0.0,
        1.0,
    )
    assert patient_bootstrap(np.ones(30), np.arange(30)) == (1.0, 1.0)


def rows_for(
    peaks: list[str], predicted: str, outside_chest: float, patients: int = 20, **energy: float
) -> pd.DataFrame:
    areas = dict(
        zip(REGIONS, (0.16, 0.2, 0.1, 0.1, 0.08, 0.27, 0.0225, 0.0225, 0.0225, 0.0225), strict=True)
    )
    return pd.DataFrame(
        [
            {
                "patient_id": f"{predicted}{i}",
                "predicted_class": predicted,
                "outcome": "",
                "peak_region": peaks[i % len(peaks)],
                "outside_lungs": 0.9,
                "uniform_outside_lungs": 0.84,
                "outside_chest": outside_chest,
                "uniform_outside_chest": 0.64,
                **{f"chance_{r}": a for r, a in areas.items()},
                **{f"energy_{r}": energy.get(r, 0.0) for r in REGIONS},
            }
            for i in range(patients)
        ]
    )


def test_flags_for_off_chest_peaks_and_energy_not_for_the_heart() -> None:
    rows = pd.concat(
        [
            rows_for(
                ["above"] * 3 + ["lung"], "normal", 0.6
            ),  # 75% of peaks above the lungs, chance 10%
            rows_for(
                ["between"] * 9 + ["lung"], "cardiomegaly", 0.6
            ),  # the heart: chest, never flagged
            rows_for(
                ["lung"], "pneumonia", 0.95
            ),  # energy 0.31 above a uniform map outside the chest
            rows_for(
                ["lung"], "tb", 0.3, top_left=0.12
            ),  # peaks in the lungs, a second hot spot on a corner tag
            rows_for(
                ["lung"], "clean", 0.3, top_left=0.03, border=0.2
            ),  # no region far above its area share
        ]
    )
    summary = summarise_regions(rows)
    assert summary.flags["normal"] == ["75% of peaks above the lungs (uniform map: 10%)"]
    assert "cardiomegaly" not in summary.flags
    assert summary.flags["pneumonia"] == [
        "95% of the maps' energy outside the chest (uniform map: 64%)"
    ]
    assert summary.flags["tb"] == [
        "12% of the maps' energy in the top-left corner (uniform map: 2%)"
    ]
    assert flags_of(summary.per_class["cardiomegaly"]) == [] and "clean" not in summary.flags
