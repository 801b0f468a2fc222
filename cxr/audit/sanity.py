"""Model-parameter randomisation (Adebayo et al., 2018): a map that explains the model must change
with it.

Weights are re-initialised in a cascade from the logits down, one weighted layer more at each stage;
the maps of each stage are compared with the trained model's by Spearman rank correlation and SSIM,
next to the rank correlation of the trained maps of random image pairs (what "unrelated" looks
like).
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr.explain.methods import explain_batch
from cxr.explain.probe import Probe, make_probe


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


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between two maps (0 when either is constant, where rho is undefined)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


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
        self.randomised = make_probe(keras.models.clone_model(model), layer)

    def run(
        self,
        images: np.ndarray,
        class_index: np.ndarray,
        method: str = "gradcam",
        max_stages: int = 8,
        seed: int = 0,
    ) -> list[dict]:
        """One row per stage: how many layers are random, the lowest of them, mean rho and SSIM to
        the trained maps."""
        trained = explain_batch(self.trained, images, class_index, method).maps
        rng = np.random.default_rng(seed)
        pairs = rng.permutation(len(images))
        unrelated = np.mean(
            [
                rank_correlation(trained[i], trained[j])
                for i, j in zip(range(len(images)), pairs, strict=True)
                if i != j
            ]
        )
        rows = []
        order = weighted_layers_top_down(self.model)
        for stage in range(1, min(max_stages, len(order)) + 1):
            self.randomised.set_weights(
                randomised_copy(self.model, set(order[:stage]), seed + stage).get_weights()
            )
            maps = explain_batch(self.randomised, images, class_index, method).maps
            rho = [rank_correlation(a, b) for a, b in zip(trained, maps, strict=True)]
            ssim = [
                structural_similarity(a, b, data_range=1.0)
                for a, b in zip(trained, maps, strict=True)
            ]
            rows.append(
                {
                    "method": method,
                    "stage": stage,
                    "randomised_down_to": order[stage - 1],
                    "spearman": float(np.mean(rho)),
                    "ssim": float(np.mean(ssim)),
                    "unrelated_pairs_spearman": float(unrelated),
                }
            )
        return rows
