"""Evaluation: metrics against hand computations, out-of-fold predictions against the model, reports
on disk."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cxr.cli import app
from cxr.config import dump_config
from cxr.data.labels import choose_positive_class
from cxr.errors import DataError
from cxr.evaluate import compute_metrics, evaluate
from cxr.runs import fold_run, pooled_evaluation_dir


def test_binary_metrics_by_hand() -> None:
    y_true = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p_pos = np.array([0.9, 0.8, 0.4, 0.3, 0.7, 0.2, 0.1, 0.35, 0.05, 0.6])
    probs = np.stack([1 - p_pos, p_pos], axis=1)
    m = compute_metrics(y_true, probs, ["normal", "pneumonia"], positive=1)
    pairs = [(p, n) for p, n in product(p_pos[y_true == 1], p_pos[y_true == 0])]
    # Mann-Whitney
    assert m.roc_auc == pytest.approx(sum((p > n) + 0.5 * (p == n) for p, n in pairs) / len(pairs))
    tp, fn, fp, tn = 2, 2, 2, 4  # predicted positive where p > 0.5: 0.9, 0.8 | 0.7, 0.6
    assert m.accuracy == pytest.approx((tp + tn) / 10)
    assert m.sensitivity == pytest.approx(tp / (tp + fn)) and m.specificity == pytest.approx(
        tn / (tn + fp)
    )
    assert m.precision == pytest.approx(tp / (tp + fp))
    assert m.f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m.confusion_matrix == [[tn, fp], [fn, tp]]


def test_multiclass_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.5, 0.2, 0.3],
        ]
    )
    m = compute_metrics(y_true, probs, ["a", "b", "c"], positive=None)
    # predictions: 0, 1, 1, 1, 2, 0
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.sensitivity == pytest.approx(np.mean([1 / 2, 2 / 2, 1 / 2]))
    # class a: negatives 1,1,2,2 -> one predicted a; class b: 0,0,2,2 -> one predicted b; c: none
    spec = [3 / 4, 3 / 4, 4 / 4]
    assert m.specificity == pytest.approx(np.mean(spec))
    per_class = [roc_auc_score(y_true == c, probs[:, c]) for c in range(3)]
    assert m.roc_auc == pytest.approx(np.mean(per_class))


@pytest.mark.parametrize(
    ("classes", "configured", "expected"),
    [
        (["normal", "pneumonia"], None, 1),
        (["cardiomegaly", "no_cardiomegaly"], None, 0),
        (["a", "b"], "a", 0),
        (["a", "b", "c"], None, None),
    ],
)
def test_positive_class(classes, configured, expected) -> None:
    assert choose_positive_class(classes, configured) == expected


def test_evaluate_writes_reports_from_the_models_own_predictions(trained_run) -> None:
    result = evaluate(trained_run, [0, 1])
    for folder in (
        fold_run(trained_run, 0).evaluation,
        fold_run(trained_run, 1).evaluation,
        pooled_evaluation_dir(trained_run),
    ):
        for name in ("predictions.csv", "metrics.json", "roc.png", "confusion.png"):
            assert (folder / name).is_file(), folder / name
    predictions = pd.read_csv(
        fold_run(trained_run, 1).evaluation / "predictions.csv",
        keep_default_na=False,
        dtype={"patient_id": str},
    )
    split = pd.read_csv(fold_run(trained_run, 1).split, dtype=str, keep_default_na=False)
    assert predictions["image"].tolist() == split[split["split"] == "validation"]["image"].tolist()
    # the model on the images, computed here without the pipeline
    dataset = trained_run.data.dataset_dir
    images = np.stack(
        [np.asarray(Image.open(dataset / p), dtype=np.float32) for p in predictions["image"]]
    )[..., None]
    logits = keras.models.load_model(fold_run(trained_run, 1).model, compile=False).predict(
        images, verbose=0
    )
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        predictions[["prob_normal", "prob_pneumonia"]].to_numpy(), probs, atol=1e-5
    )
    # pooled metrics are computed over all images, mean and std over folds
    pooled = pd.concat(
        [pd.read_csv(fold_run(trained_run, k).evaluation / "predictions.csv") for k in (0, 1)]
    )
    assert result.pooled.roc_auc == pytest.approx(
        roc_auc_score(pooled["true_label"] == "pneumonia", pooled["prob_pneumonia"])
    )
    per_fold = [result.per_fold[k].accuracy for k in (0, 1)]
    spread = result.mean_std["accuracy"]
    assert (spread.mean, spread.std) == pytest.approx((np.mean(per_fold), np.std(per_fold)))
    saved = json.loads((pooled_evaluation_dir(trained_run) / "metrics.json").read_text())
    assert saved["pooled"]["n"] == len(pooled) and saved["folds"] == [0, 1]
    # intervals over patients and calibration, pooled and per fold
    low, high = saved["pooled"]["ci95"]["roc_auc"]
    assert 0 <= low <= high <= 1 and set(saved["pooled"]["ci95"]) >= {"sensitivity", "f1"}
    score = pooled.sort_values("prob_pneumonia", kind="stable")
    hits = (score["true_label"] == "pneumonia").to_numpy(float)
    probability = score["prob_pneumonia"].to_numpy()
    # ten bins of equal count (the first ones one image larger when it does not divide)
    gaps = [
        len(p) * abs(p.mean() - h.mean())
        for p, h in zip(np.array_split(probability, 10), np.array_split(hits, 10), strict=True)
    ]
    assert result.pooled.calibration.ece == pytest.approx(sum(gaps) / len(score))
    assert result.pooled.calibration.brier == pytest.approx(np.mean((probability - hits) ** 2))
    assert (fold_run(trained_run, 0).evaluation / "calibration.png").is_file()
    # out-of-fold operating points over the pooled folds, and patients with several images
    points = result.pooled.operating_points
    assert set(points["youden"].thresholds) == {"0", "1"} and "sensitivity_0.9" in points
    assert result.pooled.patients["max"].n == pooled["patient_id"].nunique()


def test_untrained_fold_is_a_clear_error(trained_run, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"fold 3 of experiment 'tiny' was never trained"):
        evaluate(trained_run, [3])
    config = tmp_path / "c.yaml"
    config.write_text(dump_config(trained_run))
    result = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--fold", "4"])
    assert (
        result.exit_code == 1
        and "was never trained" in result.output
        and "Traceback" not in result.output
    )


def test_subgroup_aucs_equal_scikit_learns_on_the_subsets(nih_sample: Path, tmp_path: Path) -> None:
    """The NIH fixture's sex, age and view: each subgroup's AUC is scikit-learn's on that subset."""
    from cxr.config import EvaluateConfig
    from cxr.data.sources import DownloadOptions, download
    from cxr.evaluate import subgroup_table, with_subgroups

    folder = download(
        "nih-cxr14",
        DownloadOptions(dest=tmp_path, from_dir=nih_sample, size=32, folds=2, show_progress=False),
    )
    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    classes = sorted(labels["label"].unique())
    positive = 1 - classes.index("normal") if "normal" in classes else 1
    rng = np.random.default_rng(0)
    score = rng.uniform(size=len(labels)) * 0.6 + (labels["label"] == classes[positive]) * 0.3
    predictions = pd.DataFrame(
        {
            "image": labels["image"],
            "patient_id": labels["patient_id"],
            "true_label": labels["label"],
            f"prob_{classes[positive]}": score,
            f"prob_{classes[1 - positive]}": 1 - score,
        }
    )
    found = with_subgroups(predictions, folder)
    table = subgroup_table(found, classes, positive, EvaluateConfig(bootstrap=200))
    assert set(table["column"]) == {"sex", "age", "view"}
    truth = labels["label"] == classes[positive]
    ages = pd.to_numeric(labels["age"], errors="coerce")
    for row in table.to_dict("records"):
        if row["column"] == "age":
            low, high = (int(v) for v in row["value"].split("-"))
            subset = (ages >= low) & (ages <= high)
        else:
            subset = labels[row["column"]] == row["value"]
        assert row["images"] == subset.sum()
        if truth[subset].nunique() == 2:
            assert row["roc_auc"] == pytest.approx(roc_auc_score(truth[subset], score[subset]))
        assert row["below_overall"] == (row["ci95_high"] < roc_auc_score(truth, score))


def test_temperature_scaling_in_the_pooled_report(trained_run) -> None:
    from cxr.config import EvaluateConfig
    from cxr.stats import fit_temperature

    cfg = trained_run.model_copy(update={"evaluate": EvaluateConfig(calibrate="temperature")})
    result = evaluate(cfg, [0, 1])
    scaled = result.pooled.temperature
    pooled = pd.read_csv(pooled_evaluation_dir(cfg) / "predictions.csv")
    # fold 0's temperature is the one fitted on fold 1's predictions alone
    other = pooled[pooled["fold"] == 1]
    probs = other[["prob_normal", "prob_pneumonia"]].to_numpy()
    truth = (other["true_label"] == "pneumonia").to_numpy().astype(int)
    assert scaled.per_fold["0"] == pytest.approx(fit_temperature(probs, truth), rel=0.01)
    assert {"calibrated_prob_normal", "calibrated_prob_pneumonia"} <= set(pooled.columns)
    saved = json.loads((pooled_evaluation_dir(cfg) / "metrics.json").read_text())["pooled"]
    assert set(saved["temperature"]["before"]) == set(saved["temperature"]["after"])
    assert set(saved["temperature"]["after"]) == {"ece", "brier", "nll"}
    evaluate(trained_run, [0, 1])  # as the other tests found it
