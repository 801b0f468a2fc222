"""What the decision depends on: each region of the film filled in, the model asked again (#25).

Where a map looks is correlation. Here every region of the shortcut audit (above, below, beside
the lungs, the border band, each corner, and the lungs themselves) is replaced, image by image, by
an uninformative fill, and the model predicts again: the mean change of the probability of the
class it called, and the share of its calls that flip, with intervals that resample patients.

The fill is ROAD's noisy linear imputation (cxr.audit.road.impute): every filled pixel the weighted
mean of its neighbours, the region smoothly continued from its edges, plus a little noise. A tag,
a marker or the texture of the shoulders is gone, and nothing new is drawn: black would paint a
dark shape with sharp edges where none was, a shape a model can react to in its own right.

Beside each region, a control: the same fill over the same number of pixels in one compact patch
inside the lungs (for the lungs themselves, off the chest). "Any removal of this much film hurts"
is thereby told from "this region matters": a class is flagged on evidence when filling an
off-chest region lowers its probability by at least MARGIN and by at least MARGIN more than the
control does, each whole patient-bootstrap interval (of the change, of the paired difference)
below -MARGIN.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor

import keras
import numpy as np
import pandas as pd

from cxr import stats
from cxr.audit.faithfulness import batched_logits
from cxr.audit.road import Imputer
from cxr.data.regions import OFF_CHEST, REGION_WORDS, REGIONS
from cxr.explain.report import class_probabilities, predicted_classes
from cxr.results.audit import Estimate, Intervention, Paste

TESTED = ("lung", *OFF_CHEST)  # the regions filled in turn
MARGIN = 0.05  # the probability a region must cost beyond its control to be flagged
BOOTSTRAP = 2000


def control_patch(
    allowed: np.ndarray, size: int, rng: np.random.Generator, avoid: np.ndarray
) -> np.ndarray:
    """`size` pixels of `allowed` (not in `avoid`) around one seeded pixel of it: the nearest ones,
    a compact patch of the tested region's area (all of `allowed` when it is smaller)."""
    ys, xs = np.nonzero(allowed & ~avoid)
    patch = np.zeros(allowed.shape, dtype=bool)
    if not len(ys):
        return patch
    centre = rng.integers(len(ys))
    order = np.argsort((ys - ys[centre]) ** 2 + (xs - xs[centre]) ** 2, kind="stable")[:size]
    patch[ys[order], xs[order]] = True
    return patch


def intervention_rows(
    model: keras.Model,
    images: np.ndarray,
    codes: list[np.ndarray],
    names: list[str],
    patients: list[str],
    seed: int = 0,
    batch: int = 32,
) -> pd.DataFrame:
    """One row per image and tested region: the called class, its probability before, after the
    region's fill and after the control's fill, and whether the call flipped.

    `images` (N, H, W, C) at the model's input size, `codes` their regions as the model sees them
    ((H, W) indices in REGIONS: cxr.data.regions.region_codes of the film, cropped and resized like
    the film). One forward pass per region (and per control) per batch; a region the model does
    not see (cropped away) is not tested.
    """
    rng = np.random.default_rng(seed)
    if not len(images):
        return pd.DataFrame()

    def predict(stack: np.ndarray) -> np.ndarray:
        return batched_logits(model, stack, batch)

    logits = predict(images)
    called = predicted_classes(logits)
    before = class_probabilities(logits)[np.arange(len(images)), called]
    chest = [(c == REGIONS.index("lung")) | (c == REGIONS.index("between")) for c in codes]
    rows = []
    # the factorisations free the GIL: a thread per core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for region in TESTED:
            jobs, kept = [], []
            for i, image in enumerate(images):
                mask = codes[i] == REGIONS.index(region)
                allowed = ~chest[i] if region == "lung" else codes[i] == REGIONS.index("lung")
                patch = control_patch(allowed, int(mask.sum()), rng, avoid=mask)
                if not mask.any() or not patch.any() or (mask | patch).all():
                    continue
                # each fill its own seeded noise, drawn here: the same whatever the threads do
                seeds = rng.integers(2**32, size=2)
                jobs.append((image, mask, seeds[0]))
                jobs.append((image, patch, seeds[1]))
                kept.append((i, int(mask.sum()), int(patch.sum())))
            if not kept:
                continue
            fills = filled(jobs, pool)
            rows += region_rows(
                region,
                kept,
                predict(np.stack(fills[0::2])),
                predict(np.stack(fills[1::2])),
                called,
                before,
                names,
                patients,
            )
    return pd.DataFrame(rows)


def filled(jobs: list[tuple[np.ndarray, np.ndarray, int]], pool: Executor) -> list[np.ndarray]:
    """Each (image, mask, seed) with the mask imputed, with its own seeded noise. Images with the
    same mask (a corner or border band where the films are alike) share one factorisation, used
    by one thread (a factor is not shared across threads)."""
    alike: dict[bytes, list[int]] = {}
    for k, (_, mask, _) in enumerate(jobs):
        alike.setdefault(mask.tobytes(), []).append(k)

    def fill(group: list[int]) -> list[tuple[int, np.ndarray]]:
        imputer = Imputer(jobs[group[0]][1])
        return [(k, imputer(jobs[k][0], np.random.default_rng(jobs[k][2]))) for k in group]

    found = dict(pair for group in pool.map(fill, alike.values()) for pair in group)
    return [found[k] for k in range(len(jobs))]


def region_rows(
    region: str,
    kept: list[tuple[int, int, int]],
    after: np.ndarray,
    after_control: np.ndarray,
    called: np.ndarray,
    before: np.ndarray,
    names: list[str],
    patients: list[str],
) -> list[dict]:
    """The rows of one region's images ((index, area, control area) in `kept`), from the logits
    after the region's fill and after the control's."""
    rows = []
    for (i, area, control_area), new, new_control in zip(kept, after, after_control, strict=True):
        c = called[i]
        rows.append(
            {
                "image": names[i],
                "patient_id": patients[i],
                "region": region,
                "called": int(c),
                "area": area,
                "control_area": control_area,
                "before": float(before[i]),
                "after": float(class_probabilities(new[None])[0, c]),
                "after_control": float(class_probabilities(new_control[None])[0, c]),
                "flipped": bool(predicted_classes(new[None])[0] != c),
            }
        )
    return rows


def estimate(values: np.ndarray, patients: np.ndarray, seed: int) -> Estimate:
    low, high = stats.interval(stats.resampled_means(values, patients, BOOTSTRAP, seed))
    return Estimate(float(values.mean()), low, high)


def is_flagged(region: str, change: Estimate, difference: Estimate) -> bool:
    """An off-chest region whose fill lowers the probability by more than MARGIN, and by more
    than MARGIN beyond the control's change (each whole interval): a control that raises the
    probability (a smooth patch in the lungs can look like an opacity) flags nothing alone."""
    return region != "lung" and change.high < -MARGIN and difference.high < -MARGIN


def summarise_interventions(
    rows: pd.DataFrame, classes: list[str], seed: int = 0
) -> dict[str, dict[str, Intervention]]:
    """Per called class and region: the change of the class's probability when the region is
    filled, the control's change, their paired difference, the share of calls flipped, and the
    flag on evidence."""
    found: dict[str, dict[str, Intervention]] = {}
    if rows.empty:
        return found
    for (called, region), part in rows.groupby(["called", "region"], sort=False):
        patients = part["patient_id"].astype(str).to_numpy()
        change = (part["after"] - part["before"]).to_numpy()
        control = (part["after_control"] - part["before"]).to_numpy()
        fall, difference = (
            estimate(change, patients, seed),
            estimate(change - control, patients, seed),
        )
        found.setdefault(classes[int(called)], {})[str(region)] = Intervention(
            images=len(part),
            change=fall,
            control=estimate(control, patients, seed),
            difference=difference,
            flipped=float(part["flipped"].mean()),
            flagged=is_flagged(str(region), fall, difference),
        )
    return found


def region_phrase(region: str) -> str:
    """'the region above the lungs', 'the top-left corner', 'the border band'."""
    words = REGION_WORDS[region]
    return words.removeprefix("in ") if words.startswith("in the ") else f"the region {words}"


def evidence_lines(found: dict[str, dict[str, Intervention]], peaks: dict | None) -> list[str]:
    """The verdicts on evidence, one line per flagged class and region; `peaks`: the region
    rule's per-class peak shares (cxr.results.audit.RegionGroup), when known."""
    lines = []
    for name, regions in found.items():
        for region, found_here in regions.items():
            if not found_here.flagged:
                continue
            change, control = found_here.change, found_here.control
            line = (
                f"FLAGGED {name}: filling {region_phrase(region)} "
                f"lowers P({name}) by {-change.mean:.2f} [{-change.high:.2f}, {-change.low:.2f}] "
                f"and flips {found_here.flipped:.0%} of its calls (the same area filled "
                f"{'off the chest' if region == 'lung' else 'in the lungs'} changes it by "
                f"{control.mean:+.2f})"
            )
            group = (peaks or {}).get(name)
            if group is not None and region in group.peaks:
                peak = group.peaks[region]
                line += (
                    f"; its maps put {peak.share:.0%} of peaks there (uniform {peak.uniform:.0%})"
                )
            lines.append(line)
    return lines


PASTED = ("border", "top_left", "top_right", "bottom_left", "bottom_right")  # where a tag sits


def paste_rows(
    model: keras.Model,
    images: np.ndarray,
    codes: list[np.ndarray],
    names: list[str],
    patients: list[str],
    flagged: dict[str, list[str]],
    classes: list[str],
    seed: int = 0,
    batch: int = 32,
) -> pd.DataFrame:
    """The reverse test of a flag on a corner or the border: that region of the films called the
    flagged class, pasted onto films called another class (donors taken in turn, seeded). One row
    per recipient: the flagged class's probability before and after, and whether the call turned
    to it. `codes`: as intervention_rows takes them."""
    rng = np.random.default_rng(seed)
    if not len(images):
        return pd.DataFrame()
    logits = batched_logits(model, images, batch)
    called = predicted_classes(logits)
    probabilities = class_probabilities(logits)
    rows = []
    for name, regions in flagged.items():
        c = classes.index(name)
        donors = rng.permutation(np.flatnonzero(called == c))
        recipients = np.flatnonzero(called != c)
        for region in (r for r in regions if r in PASTED):
            if not len(donors) or not len(recipients):
                continue
            pasted = images[recipients].copy()
            for k in range(len(recipients)):
                j = donors[k % len(donors)]
                mask = codes[j] == REGIONS.index(region)
                pasted[k][mask] = images[j][mask]
            new = batched_logits(model, pasted, batch)
            after, turned = class_probabilities(new)[:, c], predicted_classes(new) == c
            rows += [
                {
                    "image": names[i],
                    "patient_id": patients[i],
                    "class": name,
                    "region": region,
                    "before": float(probabilities[i, c]),
                    "after": float(p),
                    "turned": bool(t),
                }
                for i, p, t in zip(recipients, after, turned, strict=True)
            ]
    return pd.DataFrame(rows)


def summarise_pastes(rows: pd.DataFrame, seed: int = 0) -> dict[str, dict[str, Paste]]:
    """Per flagged class and region: how far pasting the region moves the other class's films
    toward the flagged class, and the share of their calls it turns."""
    found: dict[str, dict[str, Paste]] = {}
    if rows.empty:
        return found
    for (name, region), part in rows.groupby(["class", "region"], sort=False):
        patients = part["patient_id"].astype(str).to_numpy()
        rise = (part["after"] - part["before"]).to_numpy()
        found.setdefault(str(name), {})[str(region)] = Paste(
            images=len(part),
            change=estimate(rise, patients, seed),
            turned=float(part["turned"].mean()),
        )
    return found


def paste_lines(found: dict[str, dict[str, Paste]]) -> list[str]:
    """One line per reverse test, under the flag it tests."""
    return [
        f"  reverse test: {region_phrase(region)} of films called {name}, pasted onto "
        f"{p.images} films called another class, changes P({name}) by {p.change.mean:+.2f} "
        f"[{p.change.low:+.2f}, {p.change.high:+.2f}] and turns {p.turned:.0%} of them into "
        f"{name} calls"
        for name, regions in found.items()
        for region, p in regions.items()
    ]
