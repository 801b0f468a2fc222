"""The causal region audit (#25) on toy models whose true dependence is known by construction.

Films of 32 x 32 pixels, grey 100 everywhere but where said; two lung fields; a bright tag (255)
in the top-left corner of some. Each toy model's logit is a fixed function of one region's mean,
so what filling a region must do is computed by hand: a region filled by imputation from a
constant surround of 100 becomes 100 (plus 1% noise), and a region the model does not read
changes nothing at all.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cxr.audit.intervention import (
    MARGIN,
    control_patch,
    evidence_lines,
    intervention_rows,
    paste_rows,
    summarise_interventions,
    summarise_pastes,
)
from cxr.data.regions import REGIONS, region_codes

SIZE = 32


def lungs() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[9:25, 6:14] = True
    mask[9:25, 18:26] = True
    return mask


def films(tagged: list[bool], bright_lungs: list[bool] | None = None) -> np.ndarray:
    images = np.full((len(tagged), SIZE, SIZE, 1), 100.0, dtype=np.float32)
    for i, tag in enumerate(tagged):
        if tag:
            images[i, :5, :5] = 255.0  # the top-left corner: 15% of 32 px is 5
        if bright_lungs and bright_lungs[i]:
            images[i][lungs()] = 200.0
    return images


def reader(rows: slice, cols: slice, scale: float) -> keras.Model:
    """logits [0, 6 (mean of the region - 100) / scale - 1]: reads that block of pixels only."""
    inputs = keras.Input((SIZE, SIZE, 1))

    def logits(x):
        mean = keras.ops.mean(x[:, rows, cols, 0], axis=(1, 2))
        second = 6 * (mean - 100) / scale - 1
        return keras.ops.stack([keras.ops.zeros_like(second), second], axis=1)

    return keras.Model(inputs, keras.layers.Lambda(logits)(inputs))


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def run(model: keras.Model, images: np.ndarray):
    names = [f"{i}.png" for i in range(len(images))]
    codes = [region_codes(lungs())] * len(images)
    rows = intervention_rows(model, images, codes, names, names, seed=0)
    return rows, summarise_interventions(rows, ["normal", "tagged"], seed=0)


def test_the_regions_are_where_the_toy_films_put_them() -> None:
    codes = region_codes(lungs())
    assert (codes[:5, :5] == REGIONS.index("top_left")).all()
    assert (codes[lungs()] == REGIONS.index("lung")).all()
    assert (codes[5:9, 6:26] == REGIONS.index("above")).all()  # above the lungs, inside the band


def test_a_model_that_reads_one_corner_is_flagged_for_it_alone() -> None:
    """CONFIRMED: filling the corner moves P(tagged) from sigmoid(5) to sigmoid(-1) and flips every
    call; as many pixels filled in the lungs move nothing; no other region matters."""
    model = reader(slice(0, 5), slice(0, 5), 155)
    rows, found = run(model, films([True] * 6 + [False] * 6))
    corner = found["tagged"]["top_left"]
    assert corner.images == 6 and corner.flipped == 1.0 and corner.flagged
    assert corner.change.mean == pytest.approx(sigmoid(-1) - sigmoid(5), abs=0.01)
    assert corner.control.mean == pytest.approx(0, abs=1e-6)
    assert corner.difference.high < -MARGIN
    tagged = rows[(rows["called"] == 1) & (rows["region"] == "top_left")]
    assert (tagged["control_area"] == tagged["area"]).all() and (tagged["area"] == 25).all()
    for region, result in found["tagged"].items():
        if region != "top_left":  # the model reads none of these pixels
            assert result.change.mean == pytest.approx(0, abs=1e-6) and not result.flagged, region
    assert not any(r.flagged for r in found["normal"].values())  # untagged: nothing to remove
    lines = evidence_lines(found, None)
    assert lines == [
        "FLAGGED tagged: filling the top-left corner lowers P(tagged) by 0.72 [0.72, 0.72] and "
        "flips 100% of its calls (the same area filled in the lungs changes it by +0.00)"
    ]


def test_a_model_that_ignores_the_corner_is_not_flagged() -> None:
    """NOT CONFIRMED: the tag is there, the model reads the lungs; filling the corner changes
    nothing, filling the lungs changes everything, and the lungs are never a shortcut."""
    model = reader(slice(9, 25), slice(6, 14), 100)
    tags = [True, False] * 4
    _, found = run(model, films(tags, bright_lungs=[True] * 4 + [False] * 4))
    assert found["tagged"]["top_left"].change.mean == pytest.approx(0, abs=1e-6)
    assert not found["tagged"]["top_left"].flagged
    lung = found["tagged"]["lung"]
    assert lung.change.mean == pytest.approx(sigmoid(-1) - sigmoid(5), abs=0.01)
    assert not lung.flagged and evidence_lines(found, None) == []


def test_a_model_that_reads_above_the_lungs_is_flagged_there() -> None:
    """The band above the lungs (neck, shoulders): bright on 'tagged' films here."""
    model = reader(slice(5, 9), slice(6, 26), 100)
    images = films([False] * 8)
    images[:4, 5:9, 6:26] = 200.0
    _, found = run(model, images)
    above = found["tagged"]["above"]
    assert above.flagged and above.flipped == 1.0
    assert above.change.mean == pytest.approx(sigmoid(-1) - sigmoid(5), abs=0.01)


def test_the_control_patch_is_compact_and_of_the_same_area() -> None:
    rng = np.random.default_rng(0)
    allowed = lungs()
    patch = control_patch(allowed, 25, rng, avoid=np.zeros_like(allowed))
    assert patch.sum() == 25 and not (patch & ~allowed).any()
    ys, xs = np.nonzero(patch)
    assert np.ptp(ys) <= 6 and np.ptp(xs) <= 6  # about a 5 x 5 blob, not scattered pixels
    everything = control_patch(allowed, 10_000, rng, avoid=np.zeros_like(allowed))
    assert everything.sum() == allowed.sum()  # capped at what is allowed


def test_the_flag_needs_a_fall_beyond_the_control() -> None:
    """By hand, on made-up rows of 40 patients: a fall the control does not share is flagged; a
    fall the control shares is not; no fall is not, even when the control rises (a smooth patch
    in the lungs can look like an opacity, as on the demo's phantoms)."""
    import pandas as pd

    rng = np.random.default_rng(1)
    cases = {"top_left": (-0.2, 0.0), "border": (-0.2, -0.2), "above": (0.0, 0.1)}
    rows = pd.DataFrame(
        [
            {
                "image": f"{i}.png",
                "patient_id": f"p{i}",
                "region": region,
                "called": 1,
                "before": 0.9,
                "after": 0.9 + change + rng.normal(0, 0.01),
                "after_control": 0.9 + control + rng.normal(0, 0.01),
                "flipped": False,
            }
            for region, (change, control) in cases.items()
            for i in range(40)
        ]
    )
    found = summarise_interventions(rows, ["normal", "tagged"])["tagged"]
    assert found["top_left"].flagged
    assert not found["border"].flagged and not found["above"].flagged
    assert found["above"].difference.high < -MARGIN  # the difference alone would have flagged it


@pytest.mark.parametrize("reads_corner", [True, False])
def test_pasting_the_flagged_corner_moves_the_other_class_only_for_its_reader(
    reads_corner: bool,
) -> None:
    """The reverse test: the tagged films' corner pasted onto untagged ones raises P(tagged) from
    sigmoid(-1) to sigmoid(5) and turns every call, by hand, for the corner reader; nothing for a
    model that reads the lungs."""
    model = (
        reader(slice(0, 5), slice(0, 5), 155)
        if reads_corner
        else reader(slice(9, 25), slice(6, 14), 100)
    )
    tagged = [True] * 3 + [False] * 5
    images = films(tagged, bright_lungs=None if reads_corner else tagged)
    names = [f"{i}.png" for i in range(len(images))]
    rows = paste_rows(
        model,
        images,
        [region_codes(lungs())] * 8,
        names,
        names,
        {"tagged": ["top_left"]},
        ["normal", "tagged"],
    )
    found = summarise_pastes(rows)["tagged"]["top_left"]
    assert found.images == 5  # the untagged films
    if reads_corner:
        assert found.change.mean == pytest.approx(sigmoid(5) - sigmoid(-1), abs=1e-5)
        assert found.turned == 1.0
    else:
        assert found.change.mean == pytest.approx(0, abs=1e-6) and found.turned == 0.0


def test_fills_sharing_a_mask_equal_each_fill_alone() -> None:
    """Images with the same mask share one factorisation (#27): each fill must still be the
    image's own imputation with its own seeded noise."""
    from concurrent.futures import ThreadPoolExecutor

    from cxr.audit.intervention import filled
    from cxr.audit.road import impute

    rng = np.random.default_rng(3)
    images = rng.uniform(0, 1, (3, 12, 12, 1))
    corner = np.zeros((12, 12), dtype=bool)
    corner[:4, :4] = True
    other = np.roll(corner, 5, axis=1)
    jobs = [(images[0], corner, 1), (images[1], corner, 2), (images[2], other, 3)]
    with ThreadPoolExecutor(2) as pool:
        found = filled(jobs, pool)
    for (image, mask, seed), fill in zip(jobs, found, strict=True):
        np.testing.assert_array_equal(fill, impute(image, mask, np.random.default_rng(seed)))
    assert not np.array_equal(found[0][:4, :4], found[1][:4, :4])  # its own image and noise
