"""ROAD (cxr.audit.road) against an independent imputation and a closed-form toy model."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from cxr.audit.road import impute, removal_masks, road_rows, summarise_road

DIRECT, DIAGONAL = 1 / 6, 1 / 12


def reference_imputation(image: np.ndarray, removed: np.ndarray, sweeps: int = 5000) -> np.ndarray:
    """Gauss-Seidel, pixel by pixel: each removed pixel becomes the weighted mean of its neighbours
    inside the image until nothing moves (the fixed point the linear system defines)."""
    out = image.astype(np.float64).copy()
    out[removed] = image[~removed].mean()
    height, width = removed.shape
    for _ in range(sweeps):
        change = 0.0
        for y, x in zip(*np.nonzero(removed), strict=True):
            total = weight = 0.0
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if (dy, dx) != (0, 0) and 0 <= ny < height and 0 <= nx < width:
                        w = DIRECT if dy == 0 or dx == 0 else DIAGONAL
                        total, weight = total + w * out[ny, nx], weight + w
            new = total / weight
            change = max(change, float(np.abs(new - out[y, x]).max()))
            out[y, x] = new
        if change < 1e-11:
            break
    return out


def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours() -> None:
    image = np.arange(9, dtype=np.float64).reshape(3, 3, 1)
    removed = np.zeros((3, 3), bool)
    removed[1, 1] = True
    direct = image[0, 1] + image[1, 0] + image[1, 2] + image[2, 1]
    diagonal = image[0, 0] + image[0, 2] + image[2, 0] + image[2, 2]
    expected = DIRECT * direct + DIAGONAL * diagonal  # the weights add up to 1
    filled = impute(image, removed, np.random.default_rng(0), noise=0.0)
    assert filled[1, 1, 0] == pytest.approx(expected[0])
    assert (filled[~removed] == image[~removed]).all()
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True  # two direct neighbours and one diagonal inside the image
    at_corner = impute(image, corner, np.random.default_rng(0), noise=0.0)[0, 0, 0]
    by_hand = (DIRECT * (1 + 3) + DIAGONAL * 4) / (2 * DIRECT + DIAGONAL)
    assert at_corner == pytest.approx(by_hand)


def test_many_removed_pixels_equal_the_fixed_point_of_local_averaging() -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (10, 12, 2))
    removed = rng.uniform(size=(10, 12)) < 0.6  # neighbouring holes: one system
    filled = impute(image, removed, rng, noise=0.0)
    for channel in range(2):
        expected = reference_imputation(image[..., channel], removed)
        np.testing.assert_allclose(filled[..., channel], expected, atol=1e-6)


def test_noise_is_seeded_and_scaled_to_the_image() -> None:
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 255, (64, 64, 1))
    removed = rng.uniform(size=(64, 64)) < 0.5
    clean = impute(image, removed, np.random.default_rng(0), noise=0.0)
    noisy = impute(image, removed, np.random.default_rng(0), noise=0.01)
    again = impute(image, removed, np.random.default_rng(0), noise=0.01)
    assert (noisy == again).all()
    added = (noisy - clean)[removed]
    assert added.std() == pytest.approx(0.01 * image.std(), rel=0.1)
    with pytest.raises(ValueError, match="at least one pixel"):
        impute(image, np.ones((64, 64), bool), rng)


def test_removal_masks_take_the_top_and_the_bottom_share() -> None:
    heatmap = np.arange(10, dtype=float).reshape(2, 5)  # 0 .. 9
    most, least = removal_masks(heatmap, 0.3)
    assert sorted(heatmap[most]) == [7, 8, 9] and sorted(heatmap[least]) == [0, 1, 2]


def mean_model(size: int) -> keras.Model:
    """Logits (2m, -2m) for the image mean m: p(class 0) = 1 / (1 + exp(-4m))."""
    inputs = keras.Input((size, size, 1))
    model = keras.Model(
        inputs, keras.layers.Dense(2, use_bias=False)(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    model.layers[-1].set_weights([np.array([[2.0, -2.0]])])
    return model


def test_road_rows_on_a_closed_form_model() -> None:
    """Each row's probabilities equal p(mean of the image imputed by the reference), and a map
    that points at the bright pixels the model counts has a positive gap, its inverse a negative
    one."""
    size = 8
    rng = np.random.default_rng(3)
    image = rng.uniform(-0.2, 0.0, (1, size, size, 1))
    image[0, 2:5, 2:5, 0] = 1.0  # what raises class 0's probability
    right = image[0, ..., 0].copy()
    maps = {"right": right[None], "inverted": -right[None]}
    rows = road_rows(mean_model(size), image, np.array([0]), maps, ["a"], noise=0.0)
    assert len(rows) == 2 * 5
    for row in rows.itertuples():
        most, least = removal_masks(maps[row.method][0], row.share)
        for kind, removed in (("morf", most), ("lerf", least)):
            m = reference_imputation(image[0, ..., 0], removed).mean()
            assert getattr(row, kind) == pytest.approx(1 / (1 + np.exp(-4 * m)), abs=1e-5)
    summary = summarise_road(rows)
    assert summary["right"].gap > 0 > summary["inverted"].gap
    assert summary["right"].shares == [0.1, 0.3, 0.5, 0.7, 0.9]


def test_road_scores_a_multi_label_model_by_the_findings_own_sigmoid() -> None:
    """Multi-label: class 0's probability is the sigmoid of its own logit 2m, not the softmax."""
    size = 8
    image = np.random.default_rng(4).uniform(-1.0, 1.0, (1, size, size, 1))
    maps = {"m": image[:, ..., 0].copy()}
    rows = road_rows(
        mean_model(size), image, np.array([0]), maps, ["a"], noise=0.0, multi_label=True
    )
    for row in rows.itertuples():
        most, least = removal_masks(maps["m"][0], row.share)
        for kind, removed in (("morf", most), ("lerf", least)):
            m = reference_imputation(image[0, ..., 0], removed).mean()
            assert getattr(row, kind) == pytest.approx(1 / (1 + np.exp(-2 * m)), abs=1e-5)


def test_summarise_road_by_hand() -> None:
    rows = pd.DataFrame(
        {
            "image": ["a", "a", "b", "b"],
            "method": ["gradcam"] * 4,
            "share": [0.1, 0.9, 0.1, 0.9],
            "morf": [0.6, 0.2, 0.4, 0.0],
            "lerf": [0.9, 0.7, 0.8, 0.6],
        }
    )
    found = summarise_road(rows)["gradcam"]
    assert found.images == 2 and found.morf == pytest.approx(0.3)
    assert found.lerf == pytest.approx(0.75) and found.gap == pytest.approx(0.45)


def whole_grid_operator(height: int, width: int):
    """The imputation's operator on every pixel of the grid, built independently of cxr: a
    pixel's diagonal is the sum of its inside neighbours' weights, a neighbour's entry -weight."""
    from scipy.sparse import csr_matrix

    index = np.arange(height * width).reshape(height, width)
    rows, columns, values = [], [], []
    diagonal = np.zeros((height, width))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if (dy, dx) == (0, 0):
                continue
            w = DIRECT if dy == 0 or dx == 0 else DIAGONAL
            here = index[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
            there = index[max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
            rows.append(here.ravel()), columns.append(there.ravel())
            values.append(np.full(here.size, -w))
            diagonal.ravel()[here.ravel()] += w
    rows.append(index.ravel()), columns.append(index.ravel()), values.append(diagonal.ravel())
    size = height * width
    return csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), (size, size)
    )


def test_the_factorisation_gives_a_direct_solve_of_the_whole_grid_operator() -> None:
    """The LDL^T factorisation (qdldl, #27) against scipy's spsolve of the whole grid's operator
    restricted to the removed pixels (a construction of its own) on 64 x 64 films: a map's
    contiguous top and bottom shares and a random one, up to 90% removed."""
    from scipy.sparse.linalg import spsolve

    rng = np.random.default_rng(5)
    image = rng.uniform(0, 255, (64, 64, 1))
    yy, xx = np.mgrid[:64, :64]
    smooth = np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 200.0)
    masks = [m for share in (0.1, 0.5, 0.9) for m in removal_masks(smooth, share)]
    masks += [rng.uniform(size=(64, 64)) < 0.9]
    operator = whole_grid_operator(64, 64).tocsc()
    for mask in masks:
        removed, known = np.flatnonzero(mask), np.flatnonzero(~mask)
        right = -operator[removed][:, known] @ image.reshape(-1, 1)[known]
        expected = image.astype(np.float64).copy()
        expected.reshape(-1, 1)[removed] = spsolve(operator[removed][:, removed], right).reshape(
            -1, 1
        )
        mine = impute(image, mask, np.random.default_rng(0), noise=0.0)
        np.testing.assert_allclose(mine, expected, atol=1e-8)


def test_images_sharing_a_map_give_what_each_gives_alone() -> None:
    """The centre map is the same for every image: its masks are factored once and used for each
    image (#27); each image's probabilities must equal its own run, by the reference too."""
    size = 8
    rng = np.random.default_rng(4)
    images = rng.uniform(-0.5, 0.5, (3, size, size, 1))
    centre = np.tile(rng.uniform(size=(1, size, size)), (3, 1, 1))
    model, names = mean_model(size), list("abc")
    together = road_rows(model, images, np.zeros(3, int), {"c": centre}, names, noise=0.0)
    for i, name in enumerate("abc"):
        alone = road_rows(
            model, images[i : i + 1], np.zeros(1, int), {"c": centre[:1]}, [name], noise=0.0
        )
        mine = together[together["image"] == name].reset_index(drop=True)
        np.testing.assert_allclose(mine[["morf", "lerf"]], alone[["morf", "lerf"]], atol=1e-12)
        most = removal_masks(centre[0], 0.5)[0]
        m = reference_imputation(images[i, ..., 0], most).mean()
        assert mine.query("share == 0.5")["morf"].iloc[0] == pytest.approx(
            1 / (1 + np.exp(-4 * m)), abs=1e-5
        )


def test_methods_sharing_masks_keep_their_own_noise() -> None:
    """Two methods whose maps remove the same pixels share one factorisation (#27); each keeps
    the noise it has alone, seeded by its place, so sharing changes no figure."""
    size = 8
    rng = np.random.default_rng(5)
    images = rng.uniform(-0.5, 0.5, (2, size, size, 1))
    first, other = rng.uniform(size=(2, 2, size, size))
    model, names = mean_model(size), ["a", "b"]
    shared = road_rows(model, images, np.zeros(2, int), {"x": first, "y": first * 2}, names)
    apart = road_rows(model, images, np.zeros(2, int), {"x": other, "y": first * 2}, names)
    mine, theirs = (rows[rows["method"] == "y"].reset_index(drop=True) for rows in (shared, apart))
    np.testing.assert_array_equal(mine[["morf", "lerf"]], theirs[["morf", "lerf"]])
    # x and y remove the same pixels but draw their own noise: not the same images
    x = shared[shared["method"] == "x"].reset_index(drop=True)
    assert not np.array_equal(x[["morf", "lerf"]], mine[["morf", "lerf"]])
