"""External validation: trained folds on another dataset, their ensemble, and renamed classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from cxr.cli import app
from cxr.config import dump_config
from cxr.data.sources import DownloadOptions, download
from cxr.errors import CxrError
from cxr.evaluate import evaluate_external
from cxr.external import open_external


@pytest.fixture(scope="module")
def other_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another synthetic 'hospital': other seed and size, its positives called opacity."""
    dest = tmp_path_factory.mktemp("elsewhere")
    folder = download(
        "synthetic",
        DownloadOptions(dest=dest, n=30, size=80, folds=2, seed=21, show_progress=False),
    )
    labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
    labels["label"] = labels["label"].replace({"pneumonia": "opacity"})
    labels.to_csv(folder / "labels.csv", index=False)
    return folder


def test_each_fold_and_the_ensemble_on_another_dataset(trained_run, other_site: Path) -> None:
    external = open_external(trained_run, str(other_site), ["opacity=pneumonia"])
    result = evaluate_external(trained_run, [0, 1], external)
    folder = result.folder
    assert folder == (trained_run.experiment.output_dir / "tiny" / "external" / other_site.name)
    per_fold = [pd.read_csv(folder / f"fold{k}" / "predictions.csv") for k in (0, 1)]
    ensemble = pd.read_csv(folder / "predictions.csv")
    labels = pd.read_csv(other_site / "labels.csv")
    # every image of the other dataset, by each fold's model
    for predictions in per_fold:
        assert sorted(predictions["image"]) == sorted(labels["image"])
    truth = (ensemble["true_label"] == "pneumonia").to_numpy()
    assert set(ensemble["true_label"]) == {"normal", "pneumonia"}  # renamed
    # the ensemble is the mean of the folds' probabilities, image by image
    joined = per_fold[0].merge(per_fold[1], on="image").merge(ensemble, on="image")
    mean = (joined["prob_pneumonia_x"] + joined["prob_pneumonia_y"]) / 2
    np.testing.assert_allclose(joined["prob_pneumonia"], mean, rtol=1e-6)
    spread = np.abs(joined["prob_pneumonia_x"] - joined["prob_pneumonia_y"]) / 2
    np.testing.assert_allclose(joined["std_pneumonia"], spread, rtol=1e-5, atol=1e-7)
    # metrics against scikit-learn on the written predictions
    expected = roc_auc_score(truth, ensemble["prob_pneumonia"])
    assert result.ensemble.roc_auc == pytest.approx(expected)
    for k, predictions in zip((0, 1), per_fold, strict=True):
        fold_truth = predictions["true_label"] == "pneumonia"
        assert result.per_fold[k].roc_auc == pytest.approx(
            roc_auc_score(fold_truth, predictions["prob_pneumonia"])
        )
    report = json.loads((folder / "metrics.json").read_text())
    assert report["renamed"] == {"opacity": "pneumonia"} and report["folds"] == [0, 1]
    assert (folder / "roc.png").is_file() and (folder / "fold1" / "confusion.png").is_file()


def test_classes_the_model_does_not_know_are_named(trained_run, other_site: Path) -> None:
    with pytest.raises(CxrError, match="classes the model does not know: opacity"):
        evaluate_external(trained_run, [0], open_external(trained_run, str(other_site)))
    wrong = open_external(trained_run, str(other_site), ["consolidation=pneumonia"])
    with pytest.raises(CxrError, match="--map names consolidation, not a class of"):
        evaluate_external(trained_run, [0], wrong)
    own = trained_run.data.dataset
    with pytest.raises(CxrError, match="the dataset the experiment was trained on"):
        evaluate_external(trained_run, [0], open_external(trained_run, own))


def test_evaluate_explain_and_audit_on_another_dataset(
    trained_run, other_site: Path, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(dump_config(trained_run))
    on = ["--config", str(config), "--on", str(other_site), "--map", "opacity=pneumonia"]
    evaluated = CliRunner().invoke(app, ["evaluate", *on])
    assert evaluated.exit_code == 0, evaluated.output
    assert "fold ensemble (2 models, mean probability)" in evaluated.output
    folder = trained_run.experiment.output_dir / "tiny" / "external" / other_site.name
    explained = CliRunner().invoke(app, ["explain", *on, "--fold", "1"])
    assert explained.exit_code == 0, explained.output
    report = pd.read_csv(folder / "explain" / "fold1" / "report.csv")
    assert len(report) == 30 and set(report["true_class"]) == {"normal", "pneumonia"}
    audited = CliRunner().invoke(
        app, ["audit", *on, "--fold", "0", "--methods", "gradcam", "--stages", "1"]
    )
    assert audited.exit_code == 0, audited.output
    shortcuts = pd.read_csv(folder / "audit" / "fold0" / "shortcuts.csv")
    assert len(shortcuts) == 30
    alone = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--map", "a=b"])
    assert alone.exit_code == 2 and "add --on" in alone.output
