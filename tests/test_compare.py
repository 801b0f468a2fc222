"""cxr compare (#25): DeLong against the published formula by hand, the paired bootstrap against a
per-resample loop with scikit-learn, paired against unpaired intervals, and the command on two
run folders written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cxr import stats
from cxr.cli import app
from cxr.compare import compare_runs, delong, paired_differences
from cxr.errors import DataError
from cxr.results.evaluation import Evaluation, Metrics
from cxr.results.records import to_json


def delong_by_hand(truth, a, b):
    """DeLong, Clarke-Pearson & DeLong 1988, as printed: psi(X, Y) = 1, 1/2, 0 for X >, =, < Y;
    V10(X_i) = mean_j psi(X_i, Y_j), V01(Y_j) = mean_i psi(X_i, Y_j); S = S10 / m + S01 / n."""
    positives = [i for i, t in enumerate(truth) if t]
    negatives = [j for j, t in enumerate(truth) if not t]
    m, n = len(positives), len(negatives)

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    v10 = [[sum(psi(s[i], s[j]) for j in negatives) / n for i in positives] for s in (a, b)]
    v01 = [[sum(psi(s[i], s[j]) for i in positives) / m for j in negatives] for s in (a, b)]
    auc = [sum(v) / m for v in v10]

    def cov(u, w):
        mu, mw = sum(u) / len(u), sum(w) / len(w)
        return sum((x - mu) * (y - mw) for x, y in zip(u, w, strict=True)) / (len(u) - 1)

    s = [[cov(v10[k], v10[j]) / m + cov(v01[k], v01[j]) / n for j in (0, 1)] for k in (0, 1)]
    z = (auc[1] - auc[0]) / (s[0][0] + s[1][1] - 2 * s[0][1]) ** 0.5
    return z, 2 * (1 - norm.cdf(abs(z)))


def test_delong_equals_the_published_formula_on_a_hand_sized_example() -> None:
    truth = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    a = np.array([0.9, 0.8, 0.8, 0.55, 0.4, 0.7, 0.3, 0.8, 0.2, 0.5, 0.1])  # ties across groups
    b = np.array([0.95, 0.6, 0.85, 0.7, 0.65, 0.6, 0.35, 0.6, 0.1, 0.45, 0.3])
    z, p = delong(truth, a, b)
    z_hand, p_hand = delong_by_hand(truth.tolist(), a.tolist(), b.tolist())
    assert z == pytest.approx(z_hand, rel=1e-12) and p == pytest.approx(p_hand, rel=1e-9)


def test_the_paired_bootstrap_equals_a_per_resample_loop_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(30)], 2)  # two images per patient
    truth = np.repeat(rng.integers(0, 2, 30), 2).astype(float)
    a = np.clip(truth * 0.3 + rng.random(60) * 0.7, 0, 1)
    b = np.clip(a + rng.normal(0, 0.1, 60), 0, 1)
    said_a, said_b = a > 0.5, b > 0.5
    rounds = 40
    found = paired_differences(truth, a, b, said_a, said_b, patients, rounds, seed=3)
    # the same resamples of patients, each scored on the repeated images by scikit-learn
    differences = []
    for index, draws in stats.patient_resamples(patients, rounds, seed=3):
        for row in draws:
            take = np.concatenate([np.flatnonzero(index == d) for d in row])
            if len(set(truth[take])) < 2:
                continue
            differences.append(
                roc_auc_score(truth[take], b[take]) - roc_auc_score(truth[take], a[take])
            )
    expected = np.percentile(differences, [2.5, 97.5])
    assert found["roc_auc"] == pytest.approx(tuple(expected), abs=1e-12)


def test_paired_intervals_are_narrower_than_unpaired_on_correlated_scores() -> None:
    rng = np.random.default_rng(1)
    n = 200
    truth = rng.integers(0, 2, n).astype(float)
    a = 1 / (1 + np.exp(-(2 * truth - 1 + rng.normal(0, 1.5, n))))
    b = np.clip(a + rng.normal(0.02, 0.03, n), 0, 1)  # B: A with a little change
    patients = np.array([f"p{i}" for i in range(n)])
    low, high = paired_differences(truth, a, b, a > 0.5, b > 0.5, patients, 500)["roc_auc"]
    # unpaired: each run's AUC resampled on its own patients, the difference of two independents
    first = stats.binary_intervals(truth, a, a > 0.5, patients, 500, seed=1)["roc_auc"]
    second = stats.binary_intervals(truth, b, b > 0.5, patients, 500, seed=2)["roc_auc"]
    half_widths = ((first[1] - first[0]) / 2, (second[1] - second[0]) / 2)
    unpaired = 2 * np.hypot(*half_widths)  # independent intervals add in quadrature
    assert (high - low) < unpaired / 3


def fake_run(runs: Path, name: str, table: pd.DataFrame, score: np.ndarray) -> None:
    folder = runs / name / "evaluation"
    folder.mkdir(parents=True)
    predicted = np.where(score > 0.5, "sick", "normal")
    table.assign(
        fold=0,
        predicted_label=predicted,
        confidence=np.maximum(score, 1 - score),
        prob_normal=1 - score,
        prob_sick=score,
    ).to_csv(folder / "predictions.csv", index=False)
    pooled = Metrics(
        n=len(score),
        accuracy=0.5,
        classes=["normal", "sick"],
        positive_class="sick",
        **dict.fromkeys(["roc_auc", "sensitivity", "specificity", "precision", "f1"], 0.5),
    )  # what compare reads of it: the classes and the positive class
    report = Evaluation(folds=[0], pooled=pooled, mean_std={}, per_fold={0: pooled})
    (folder / "metrics.json").write_text(json.dumps(to_json(report)))


def test_compare_two_runs_and_refuse_what_cannot_be_compared(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 80
    truth = rng.integers(0, 2, n)
    table = pd.DataFrame(
        {
            "image": [f"images/{i}.png" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "true_label": np.where(truth == 1, "sick", "normal"),
        }
    )
    a = np.clip(truth * 0.4 + rng.random(n) * 0.6, 0, 1)
    b = np.clip(truth * 0.6 + rng.random(n) * 0.4, 0, 1)
    runs = tmp_path / "runs"
    fake_run(runs, "base", table, a)
    fake_run(runs, "fixed", table.iloc[::-1], b[::-1])  # rows in another order: joined by image
    result = compare_runs("base", "fixed", runs)
    auc = result.differences[0]
    assert auc.metric == "roc_auc" and result.images == n and result.patients == n // 2
    assert auc.a == pytest.approx(roc_auc_score(truth, a)) and auc.b == pytest.approx(
        roc_auc_score(truth, b)
    )
    assert auc.low < auc.difference < auc.high and 0 <= auc.p_value <= 1
    for name in ("differences.csv", "comparison.json", "comparison.png"):
        assert (result.folder / name).is_file(), name
    output = CliRunner().invoke(app, ["compare", "base", "fixed", "--runs", str(runs)]).output
    assert "roc_auc: B - A = " in output and "DeLong p = " in output, output
    fake_run(runs, "elsewhere", table.assign(image="other/" + table["image"]), b)
    with pytest.raises(DataError, match="share 0 predicted image"):
        compare_runs("base", "elsewhere", runs)
    result = CliRunner().invoke(app, ["compare", "base", "nothing", "--runs", str(runs)])
    assert result.exit_code == 1 and "no run folder" in result.output


def test_damaged_or_hostile_inputs_are_one_line(tmp_path: Path) -> None:
    """A cut metrics.json, a predictions table without its probabilities, and an --on that would
    leave the runs folder: each one line, exit 1 or 2, nothing written."""
    table = pd.DataFrame(
        {
            "image": [f"images/{i}.png" for i in range(10)],
            "patient_id": [f"p{i}" for i in range(10)],
            "true_label": ["sick", "normal"] * 5,
        }
    )
    runs = tmp_path / "runs"
    fake_run(runs, "a", table, np.linspace(0.1, 0.9, 10))
    fake_run(runs, "b", table, np.linspace(0.9, 0.1, 10))
    (runs / "a/evaluation/metrics.json").write_text('{"pooled": {"posit')
    (runs / "b/evaluation/predictions.csv").write_text("image,patient_id\nx,y\n")
    cases = {
        ("a", "b"): (1, "its predictions or metrics are damaged"),
        ("b", "a"): (1, "its predictions or metrics are damaged"),
        ("a", "b", "--on", "../../elsewhere"): (2, "--on '../../elsewhere'"),
    }
    for args, (code, message) in cases.items():
        result = CliRunner().invoke(app, ["compare", *args, "--runs", str(runs)])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == code and len(errors) == 1 and message in errors[0], result.output
    assert not (runs / "compare").exists() and not (tmp_path / "elsewhere").exists()
