"""Model-parameter randomisation (Adebayo et al., 2018): a map that explains the model must change
with it.

Weights are re-initialised in a cascade from the logits down, one weighted layer more at each stage;
the maps of each stage are compared with the trained model's by Spearman rank correlation and SSIM,
next to the rank correlation of the trained maps of random image pairs (what "unrelated" looks
like).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd
from skimage.metrics import structural_similarity

from cxr.audit.inputs import AuditInputs
from cxr.explain.methods import explain_methods
from cxr.explain.probe import Probe, make_probe
from cxr.results.audit import Sanity
from cxr.stats import ranked, ranked_correlation

SANITY_PASS = 0.5  # the last stage's maps must rank-correlate less than this with the trained ones


def weighted_layers_top_down(model: keras.Model) -> list[str]:
    """Names of the layers that hold weights, from the output back to the input."""
    return [layer.name for layer in reversed(model.layers) if layer.weights]


def randomised_copy(model: keras.Model, randomise: set[str], seed: int) -> keras.Model:
    """A copy whose `randomise` layers have fresh initial weights; every other layer keeps the
    trained ones."""
    keras.utils.set_random_seed(seed)
    copy = keras.models.clone_model(model)  # new layers, freshly initialised
    for original, fresh in zip(model.layers, copy.layers, strict=True):
        if original.name not in randomise and original.weights:
            fresh.set_weights(original.get_weights())
    return copy


class Cascade:
    """The trained model's probe and one probe for its randomised copies, kept across methods and
    stages.

    Each stage only loads other weights into the second probe, so every method is traced once per
    probe rather than once per stage.
    """

    def __init__(self, model: keras.Model, layer: str, trained: Probe | None = None) -> None:
        """`trained` reuses a probe of `model` already made (and traced)."""
        self.model, self.layer = model, layer
        self.trained = trained or make_probe(model, layer)
        copy = keras.models.clone_model(model)
        # the same method settings as the trained probe's, or the maps would not be comparable
        self.randomised = make_probe(
            copy, layer, parameters=self.trained.parameters, multi_label=self.trained.multi_label
        )

    def run(
        self,
        images: np.ndarray,
        class_index: np.ndarray,
        methods: Sequence[str] = ("gradcam",),
        max_stages: int = 8,
        seed: int = 0,
        trained: dict[str, np.ndarray] | None = None,
    ) -> list[dict]:
        """One row per method and stage: how many layers are random, the lowest of them, mean rho
        and SSIM to the trained maps (`trained`: those maps per method, when the caller has them).

        Stages are the outer loop: each randomised copy is made once and serves every method.
        """
        trained = dict(trained or {})
        missing = [method for method in methods if method not in trained]
        if missing:
            found = explain_methods(self.trained, images, class_index, missing)
            trained |= {method: e.maps for method, e in found.items()}
        pairs = np.random.default_rng(seed).permutation(len(images))
        trained_ranks = {method: [ranked(m) for m in maps] for method, maps in trained.items()}
        unrelated = {
            method: float(
                np.mean(
                    [
                        ranked_correlation(ranks[i], ranks[j])
                        for i, j in zip(range(len(images)), pairs, strict=True)
                        if i != j
                    ]
                )
            )
            for method, ranks in trained_ranks.items()
        }
        rows = []
        order = weighted_layers_top_down(self.model)
        for stage in range(1, min(max_stages, len(order)) + 1):
            self.randomised.set_weights(
                randomised_copy(self.model, set(order[:stage]), seed + stage).get_weights()
            )
            found = explain_methods(self.randomised, images, class_index, list(methods))
            for method in methods:
                maps = found[method].maps
                rho = [
                    ranked_correlation(a, ranked(b))
                    for a, b in zip(trained_ranks[method], maps, strict=True)
                ]
                ssim = [
                    structural_similarity(a, b, data_range=1.0)
                    for a, b in zip(trained[method], maps, strict=True)
                ]
                rows.append(
                    {
                        "method": method,
                        "stage": stage,
                        "randomised_down_to": order[stage - 1],
                        "spearman": float(np.mean(rho)),
                        "ssim": float(np.mean(ssim)),
                        "unrelated_pairs_spearman": unrelated[method],
                    }
                )
        return sorted(rows, key=lambda row: (list(methods).index(row["method"]), row["stage"]))


def sanity_of(inputs: AuditInputs) -> pd.DataFrame:
    """The cascade over the audit's sample, its maps compared with the trained model's."""
    cascade = Cascade(inputs.model, inputs.trained.layer, inputs.probe)
    methods = list(inputs.maps)
    return pd.DataFrame(
        cascade.run(inputs.images, inputs.targets, methods, inputs.stages, trained=inputs.maps)
    )


def summarise_sanity(sanity: pd.DataFrame) -> dict[str, Sanity]:
    """Each method's last cascade stage, and whether its maps have moved far enough from the
    trained ones."""
    checks = {}
    for method, part in sanity.groupby("method", sort=False):
        last = part.iloc[-1]
        checks[str(method)] = Sanity(
            stages=len(part),
            randomised_down_to=str(last["randomised_down_to"]),
            last_stage_spearman=float(last["spearman"]),
            unrelated_pairs_spearman=float(last["unrelated_pairs_spearman"]),
            passes=bool(last["spearman"] < SANITY_PASS),
        )
    return checks


def pool_sanity(per_fold: list[dict[str, Sanity]]) -> dict[str, Sanity]:
    """The check per fold, averaged, passed only when it passes in every fold."""
    sanity = {}
    for method in per_fold[0]:
        checks = [found[method] for found in per_fold]
        sanity[method] = Sanity(
            stages=checks[0].stages,
            randomised_down_to=checks[0].randomised_down_to,
            last_stage_spearman=float(np.mean([c.last_stage_spearman for c in checks])),
            unrelated_pairs_spearman=float(np.mean([c.unrelated_pairs_spearman for c in checks])),
            passes=all(c.passes for c in checks),
            folds_passing=sum(c.passes for c in checks),
        )
    return sanity
