"""Bootstrap intervals over patients and calibration, against scikit-learn and hand values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from cxr.stats import (
    binary_intervals,
    binary_metrics,
    calibration,
    patient_weights,
    weighted_auc,
)


def test_weighted_auc_is_the_auc_of_the_repeated_data() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(size=40), 1)  # many ties
    positive = rng.uniform(size=40) < 0.4
    counts = rng.integers(0, 4, size=(3, 40)).astype(float)
    got = weighted_auc(scores, positive, counts)
    for row, value in zip(counts, got, strict=True):
        repeat = row.astype(int)
        expected = skm.roc_auc_score(np.repeat(positive, repeat), np.repeat(scores, repeat))
        assert value == pytest.approx(expected, abs=1e-12)
        assert value == pytest.approx(skm.roc_auc_score(positive, scores, sample_weight=row))
    assert np.isnan(weighted_auc(scores, np.zeros(40, bool), np.ones((1, 40))))[0]


def test_binary_metrics_equal_scikit_learns_on_the_repeated_data() -> None:
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=60) < 0.5
    score = np.clip(truth * 0.3 + rng.uniform(size=60) * 0.7, 0, 1)
    predicted = score >= 0.5
    row = rng.integers(0, 3, size=60).astype(float)
    got = {k: v[0] for k, v in binary_metrics(truth, score, predicted, row).items()}
    t, p, s = (np.repeat(a, row.astype(int)) for a in (truth, predicted, score))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(t, s))
    assert got["sensitivity"] == pytest.approx(skm.recall_score(t, p))
    assert got["specificity"] == pytest.approx(skm.recall_score(~t, ~p))
    assert got["precision"] == pytest.approx(skm.precision_score(t, p))
    assert got["f1"] == pytest.approx(skm.f1_score(t, p))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(t, p))


def test_a_patients_images_are_drawn_together() -> None:
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    weights = patient_weights(patients, rounds=4000, seed=2)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # three patients, three draws: each patient is drawn once on average
    np.testing.assert_allclose(weights.mean(axis=0), 1.0, atol=0.05)
    assert set(np.unique(weights.sum(axis=1) % 1)) == {0.0}


def test_auc_intervals_cover_the_true_auc_at_about_the_nominal_rate() -> None:
    """Positives ~ N(1, 1), negatives ~ N(0, 1): the true AUC is Phi(1 / sqrt 2). 200 data sets
    give the coverage within about 1.5 points (its standard error), so 92-98% is +-2 of them."""
    truth_auc = norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(3)
    covered = 0
    for k in range(200):
        truth = np.r_[np.ones(100, bool), np.zeros(100, bool)]
        score = np.r_[rng.normal(1, 1, 100), rng.normal(0, 1, 100)]
        low, high = binary_intervals(
            truth, score, score > 0.5, np.arange(200), rounds=1000, seed=k
        )["roc_auc"]
        covered += low <= truth_auc <= high
    assert 0.92 <= covered / 200 <= 0.98, covered


def test_calibration_by_hand() -> None:
    probability = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    outcome = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    result = calibration(probability, outcome, bins=2)
    # bins {0.1..0.4}: mean 0.25, observed 0.25; {0.6..0.9}: mean 0.75, observed 0.75
    assert result["ece"] == pytest.approx(0.0) and result["counts"] == [4, 4]
    brier = np.mean((probability - outcome) ** 2)
    assert result["brier"] == pytest.approx(brier) == pytest.approx(0.2)
    skewed = calibration(probability, np.ones(8), bins=4)
    # four bins of two: gaps 0.85, 0.65, 0.35, 0.15, each a quarter of the images
    assert skewed["ece"] == pytest.approx((0.85 + 0.65 + 0.35 + 0.15) / 4)


def test_thresholds_by_hand() -> None:
    from cxr.stats import sensitivity_threshold, youden_threshold

    truth = np.array([0, 0, 0, 1, 0, 1, 1, 1], bool)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # at 0.6: sensitivity 3/4, specificity 4/4 (J = 0.75); at 0.4: 4/4 and 3/4 (J = 0.75); the
    # first maximum in scikit-learn's decreasing thresholds is 0.6
    assert youden_threshold(truth, score) == 0.6
    assert sensitivity_threshold(truth, score, 1.0) == 0.4
    assert sensitivity_threshold(truth, score, 0.5) == 0.7


def test_operating_points_are_never_chosen_on_their_own_fold() -> None:
    from cxr.stats import out_of_fold_operating_points, youden_threshold

    rng = np.random.default_rng(5)
    truth = rng.uniform(size=90) < 0.5
    score = np.clip(truth * 0.4 + rng.uniform(size=90) * 0.6, 0, 1)
    folds = np.repeat([0, 1, 2], 30)
    points = out_of_fold_operating_points(truth, score, folds, 0.9)
    for fold in (0, 1, 2):
        others = folds != fold
        assert points["youden"]["thresholds"][str(fold)] == youden_threshold(
            truth[others], score[others]
        )
    # fold 0's own scores changed: its threshold stays, the others' move
    changed = score.copy()
    changed[folds == 0] = rng.uniform(size=30)
    again = out_of_fold_operating_points(truth, changed, folds, 0.9)
    assert again["youden"]["thresholds"]["0"] == points["youden"]["thresholds"]["0"]
    called = np.concatenate(
        [score[folds == f] >= points["sensitivity_0.9"]["thresholds"][str(f)] for f in (0, 1, 2)]
    )
    assert points["sensitivity_0.9"]["sensitivity"] == pytest.approx(called[truth].mean())
    assert points["sensitivity_0.9"]["specificity"] == pytest.approx((~called[~truth]).mean())


def test_patient_metrics_equal_a_hand_built_table() -> None:
    import pandas as pd

    from cxr.evaluate import patient_metrics

    predictions = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "c", "c", "d"],
            "true_label": ["normal", "tb", "normal", "normal", "normal", "tb"],
            "prob_tb": [0.2, 0.7, 0.4, 0.1, 0.6, 0.3],
        }
    ).assign(prob_normal=lambda t: 1 - t["prob_tb"])
    found = patient_metrics(predictions, ["normal", "tb"], 1)
    # patients a (tb: an image is), b, c, d (tb): max 0.7, 0.4, 0.6, 0.3; mean 0.45, 0.4, 0.35, 0.3
    truth = [1, 0, 0, 1]
    assert found["max"].roc_auc == pytest.approx(skm.roc_auc_score(truth, [0.7, 0.4, 0.6, 0.3]))
    assert found["mean"].roc_auc == pytest.approx(skm.roc_auc_score(truth, [0.45, 0.4, 0.35, 0.3]))
    # max: a and c called tb (0.7, 0.6): sensitivity 1/2, specificity 1/2
    assert (found["max"].sensitivity, found["max"].specificity) == (0.5, 0.5)
    assert found["max"].n == 4
    single = predictions.assign(patient_id=["a", "b", "c", "d", "e", "f"])
    assert patient_metrics(single, ["normal", "tb"], 1) is None


def test_temperature_scaling_undoes_over_confidence_out_of_fold() -> None:
    from cxr.stats import cross_fitted_temperature, negative_log_likelihood

    rng = np.random.default_rng(6)
    logits = rng.normal(0, 1.5, size=(3000, 2))
    honest = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = (rng.uniform(size=3000) < honest[:, 1]).astype(int)
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)  # over-confident
    folds = np.repeat([0, 1, 2], 1000)
    calibrated, temperatures = cross_fitted_temperature(sharp, truth, folds)
    assert negative_log_likelihood(calibrated, truth) < negative_log_likelihood(sharp, truth)
    assert all(2.5 < t < 3.5 for t in temperatures.values()), temperatures
    # never fitted on its own rows: fold 0's temperature ignores fold 0's labels
    flipped = truth.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]
    _, again = cross_fitted_temperature(sharp, flipped, folds)
    assert again["0"] == pytest.approx(temperatures["0"]) and again["1"] != temperatures["1"]


def test_resamples_in_chunks_are_the_same_resamples(monkeypatch) -> None:
    """Memory is bounded by doing the resamples a chunk at a time; the intervals do not move."""
    import cxr.stats as stats

    rng = np.random.default_rng(7)
    truth = rng.uniform(size=300) < 0.4
    score = np.clip(truth * 0.3 + rng.uniform(size=300) * 0.7, 0, 1)
    patients = rng.integers(0, 120, 300)
    whole = binary_intervals(truth, score, score > 0.5, patients, rounds=500)
    monkeypatch.setattr(stats, "BUDGET", 300 * 7)  # seven resamples a chunk
    assert binary_intervals(truth, score, score > 0.5, patients, rounds=500) == whole
    assert stats.patient_weights(patients, 20).shape == (20, 300)
