"""Fold agreement: do the experiment's other fold models see an image as its own fold model does?

Every image of a fold is explained again by each other trained fold's model, for the class its own
model's map explained (the report's target_class): per image, the spread of that class's
probability over all fold models (the fold ensemble's uncertainty), and the rank correlation of
each other model's map with the own model's. The other models trained on the image, so their
figures are agreement, not validation; images whose maps disagree most are where a reader should
look first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr.catalogs.methods import method_parameters
from cxr.config import Config
from cxr.data.pipeline import fold_dataset
from cxr.explain.methods import explain_batch
from cxr.explain.probe import make_probe
from cxr.explain.report import output_probabilities
from cxr.models.fusing import fuse_batch_norm
from cxr.results.explanation import Agreement
from cxr.runs import FoldRun
from cxr.stats import ranked, ranked_correlation

SHOWN = 10  # the most disagreeing images named in the summary


def maps_and_probabilities(
    run: FoldRun,
    settings: Config,
    table: pd.DataFrame,
    classes: list[str],
    targets: np.ndarray,
    method: str,
    layer: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One fold model's maps of the given classes for every image, and those classes'
    probabilities."""
    probe = make_probe(
        fuse_batch_norm(run.load_model(), keep=[layer]),
        layer,
        parameters=method_parameters(settings.explain),
        multi_label=settings.data.multi_label,
    )
    maps, probs = [], []
    batch = settings.explain.batch_size
    ds = fold_dataset(settings, table, classes, batch)
    for start, (images, _) in zip(range(0, len(table), batch), ds, strict=False):
        wanted = targets[start : start + batch]
        result = explain_batch(probe, images, wanted, method, pad_to=batch)
        maps.append(result.maps)
        p = output_probabilities(result.logits, settings.data.multi_label)
        probs.append(p[np.arange(len(wanted)), wanted])
    return np.concatenate(maps), np.concatenate(probs)


def fold_agreement(
    own: FoldRun,
    others: list[FoldRun],
    settings: dict[int, Config],
    report: pd.DataFrame,
    classes: list[str],
    method: str,
    layer: str | None,
) -> pd.DataFrame:
    """Per image of the report: the mean and lowest rank correlation of the other folds' maps
    with the own fold's, and the standard deviation of the explained class's probability over
    all fold models; most disagreeing first."""
    table = report[["image", "patient_id"]].assign(label=classes[0])  # labels are not used
    targets = report["target_class"].map(classes.index).to_numpy()
    mine, own_prob = maps_and_probabilities(
        own, settings[own.fold], table, classes, targets, method, layer
    )
    own_ranks = [ranked(m) for m in mine]
    rhos, probs = [], [own_prob]
    for run in others:
        maps, p = maps_and_probabilities(
            run, settings[run.fold], table, classes, targets, method, layer
        )
        rhos.append(
            [ranked_correlation(a, ranked(b)) for a, b in zip(own_ranks, maps, strict=True)]
        )
        probs.append(p)
    rho = np.array(rhos)
    found = pd.DataFrame(
        {
            "image": report["image"].to_numpy(),
            "target_class": report["target_class"].to_numpy(),
            "own_fold": own.fold,
            "other_folds": ",".join(str(r.fold) for r in others),
            "mean_rank_correlation": rho.mean(axis=0),
            "lowest_rank_correlation": rho.min(axis=0),
            "probability_std": np.std(probs, axis=0),
        }
    )
    return found.sort_values("mean_rank_correlation", kind="stable").reset_index(drop=True)


def summarise_agreement(found: pd.DataFrame) -> Agreement:
    return Agreement(
        images=len(found),
        other_folds=found["other_folds"].iloc[0] if len(found) else "",
        median_rank_correlation=float(found["mean_rank_correlation"].median()),
        median_probability_std=float(found["probability_std"].median()),
        most_disagreeing=found["image"].head(SHOWN).tolist(),
    )
