"""ROAD, remove and debias (Rong et al. 2022): faithfulness without the removal's own shape.

Deletion curves fill removed pixels with black or blur, and the filled shape alone can move the
model: the hole tells it where the map was. ROAD fills them by noisy linear imputation instead:
each removed pixel becomes the weighted mean of its eight neighbours (direct ones 1/6, diagonal ones
1/12; removed neighbours count too, so all removed pixels are one sparse linear system), plus a
little seeded noise. At each share of pixels it removes the most relevant first (MoRF: the target
probability should fall) and, separately, the least relevant first (LeRF: it should hold). The
summary is the mean over shares of each curve, and LeRF minus MoRF (higher is more faithful).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pandas as pd
import qdldl
from scipy.sparse import coo_matrix, triu

from cxr.audit.faithfulness import most_salient_first
from cxr.audit.inputs import AuditInputs
from cxr.audit.mapmetrics import target_probabilities
from cxr.results.audit import Road

SHARES = (0.1, 0.3, 0.5, 0.7, 0.9)  # of the pixels removed
NOISE = 0.01  # standard deviation of the added noise, a share of the image's own
NEIGHBOURS = (
    ((-1, -1), 1 / 12),
    ((-1, 0), 1 / 6),
    ((-1, 1), 1 / 12),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((1, 1), 1 / 12),
)


class Imputer:
    """The noisy linear imputation of one set of `removed` (H, W) pixels, its sparse system
    factored once: every image with those pixels removed is then one cheap solve.

    At least one pixel must stay (else the system has no solution).
    """

    def __init__(self, removed: np.ndarray) -> None:
        if removed.all():
            raise ValueError("noisy linear imputation needs at least one pixel that stays")
        height, width = removed.shape
        self.ys, self.xs = ys, xs = np.nonzero(removed)
        number = -np.ones(removed.shape, dtype=np.int64)
        number[ys, xs] = np.arange(len(ys))
        diagonal = np.zeros(len(ys))
        rows, columns, values = [], [], []
        self.known: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        for (dy, dx), weight in NEIGHBOURS:
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            diagonal[inside] += weight
            which = np.nonzero(inside)[0]
            neighbour = number[ny[which], nx[which]]
            missing = neighbour >= 0
            rows.append(which[missing])
            columns.append(neighbour[missing])
            values.append(np.full(missing.sum(), -weight))
            known = which[~missing]
            self.known.append((known, ny[known], nx[known], weight))
        size = len(ys)
        system = coo_matrix(
            (
                np.concatenate([diagonal, *values]),
                (
                    np.concatenate([np.arange(size), *rows]),
                    np.concatenate([np.arange(size), *columns]),
                ),
            ),
            shape=(size, size),
        ).tocsc()
        # symmetric positive definite (diagonally dominant): an LDL^T factorisation of its upper
        # triangle under an AMD ordering, without pivoting, which releases the GIL; on ROAD's
        # masks it matches SuperLU's LU to 1e-8 and takes about the same time on one thread, but
        # SuperLU holds the GIL in part and scaled 1.5x on two threads against qdldl's 1.95x
        self.factor = qdldl.Solver(triu(system, format="csc"))

    def __call__(
        self, image: np.ndarray, rng: np.random.Generator, noise: float = NOISE
    ) -> np.ndarray:
        """(H, W, C) image with the removed pixels replaced by the weighted mean of their
        neighbours inside the image, plus Gaussian noise of `noise` x the image's standard
        deviation."""
        known_sum = np.zeros((len(self.ys), image.shape[-1]))
        for known, ny, nx, weight in self.known:
            known_sum[known] += weight * image[ny, nx]
        solved = np.stack([self.factor.solve(column) for column in known_sum.T], axis=1)
        filled = image.astype(np.float64, copy=True)
        filled[self.ys, self.xs] = solved + rng.normal(0, noise * image.std() + 1e-12, solved.shape)
        return filled.astype(image.dtype)


def impute(
    image: np.ndarray, removed: np.ndarray, rng: np.random.Generator, noise: float = NOISE
) -> np.ndarray:
    """`image` with the `removed` pixels imputed (Imputer, for one image)."""
    return Imputer(removed)(image, rng, noise)


def removal_masks(
    heatmap: np.ndarray, share: float, order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(most relevant, least relevant) `share` of the pixels; ties broken by position. `order`:
    the map's pixels, most salient first, when already ranked (one ranking for every share)."""
    order = most_salient_first(heatmap.ravel()) if order is None else order
    count = round(share * order.size)
    most = np.zeros(order.size, dtype=bool)
    least = np.zeros(order.size, dtype=bool)
    most[order[:count]] = True
    least[order[order.size - count :]] = True
    return most.reshape(heatmap.shape), least.reshape(heatmap.shape)


def road_rows(
    model: keras.Model,
    images: np.ndarray,
    targets: np.ndarray,
    maps: dict[str, np.ndarray],
    names: list[str],
    seed: int = 0,
    batch: int = 32,
    noise: float = NOISE,
    multi_label: bool = False,
) -> pd.DataFrame:
    """One row per image, method and share: the target probability with the most relevant pixels
    imputed (morf) and with the least relevant ones imputed (lerf).

    The sparse solves release the GIL and run on every core; each imputation's noise has its own
    seed (from `seed`, the map, the share and the image), so the result does not depend on the
    order they finish in.
    """
    rows = []
    methods = list(maps)
    orders = {
        (m, i): most_salient_first(maps[method][i].ravel())
        for m, method in enumerate(methods)
        for i in range(len(images))
    }
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for s, share in enumerate(SHARES):
            # the same removed pixels (the centre map's, of every image; often Grad-CAM's and
            # HiResCAM's) are one factorisation, used by one thread (a factor is not
            # shared across them); each map and image keeps its own noise
            masks = {
                (m, i): removal_masks(maps[method][i], share, orders[m, i])
                for m, method in enumerate(methods)
                for i in range(len(images))
            }
            alike: dict[bytes, list[tuple[int, int, int]]] = {}
            for (m, i), pair in masks.items():
                for which, mask in enumerate(pair):  # most relevant, least relevant
                    alike.setdefault(mask.tobytes(), []).append((m, i, which))

            def fills(group: list[tuple[int, int, int]], s=s, masks=masks) -> list:
                m, i, which = group[0]
                imputer = Imputer(masks[m, i][which])
                out = []
                for m, i, which in group:
                    rng = np.random.default_rng([seed, m, s, i])
                    if which:  # the least relevant pixels' noise follows the most relevant's
                        rng.normal(size=(int(masks[m, i][0].sum()), images.shape[-1]))
                    out.append(((m, i, which), imputer(images[i], rng, noise)))
                return out

            filled = dict(found for group in pool.map(fills, alike.values()) for found in group)
            for m, method in enumerate(methods):
                variants = [filled[m, i, which] for i in range(len(images)) for which in (0, 1)]
                probs = target_probabilities(
                    model, np.stack(variants), np.repeat(targets, 2), batch, multi_label
                )
                rows += [
                    {
                        "image": name,
                        "method": method,
                        "share": share,
                        "morf": float(probs[2 * i]),
                        "lerf": float(probs[2 * i + 1]),
                    }
                    for i, name in enumerate(names)
                ]
    rows.sort(key=lambda row: methods.index(row["method"]))  # method by method, as before
    return pd.DataFrame(rows)


def summarise_road(rows: pd.DataFrame) -> dict[str, Road]:
    """Per method and baseline map: the mean MoRF and LeRF probabilities over images and shares,
    and their gap."""
    summary = {}
    for method, part in rows.groupby("method", sort=False):
        morf, lerf = float(part["morf"].mean()), float(part["lerf"].mean())
        summary[str(method)] = Road(
            images=part["image"].nunique(),
            shares=sorted(float(s) for s in part["share"].unique()),
            morf=morf,
            lerf=lerf,
            gap=lerf - morf,
        )
    return summary


def road_of(inputs: AuditInputs) -> pd.DataFrame:
    """ROAD over the audit's sample, every method and baseline map (noise seeded by the fold)."""
    return road_rows(
        inputs.fused,
        inputs.images,
        inputs.targets,
        inputs.every,
        inputs.names,
        seed=inputs.fold,
        batch=inputs.batch,
        multi_label=inputs.multi_label,
    )
