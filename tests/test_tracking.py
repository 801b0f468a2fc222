"""train.tracking: mlflow, read back with MLflow's own client from a temporary local store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from cxr.errors import ConfigError


def test_a_tracked_demo_is_in_mlflow(synthetic_dataset, tmp_path, monkeypatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    from cxr.evaluate import evaluate
    from cxr.runs import fold_run
    from cxr.train import train_folds

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_config(synthetic_dataset, tmp_path / "runs", "train.tracking=mlflow")
    train_folds(cfg, [0])
    evaluate(cfg, [0])
    store = tmp_path / "mlruns" / "mlflow.db"  # the default: mlruns/ beside runs/
    assert store.is_file()
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["tiny"])
    assert len(runs) == 1 and runs.loc[0, "tags.mlflow.runName"] == "fold0"
    # params: the resolved config, key by key
    assert runs.loc[0, "params.model.name"] == "tiny_cnn"
    assert runs.loc[0, "params.train.epochs"] == "2" and runs.loc[0, "params.data.fold"] == "0"
    run_id = runs.loc[0, "run_id"]
    client = mlflow.MlflowClient()
    # every epoch's validation loss, as history.csv has it
    history = [m.value for m in client.get_metric_history(run_id, "val_loss")]
    expected = [
        float(line.split(",")[-1]) for line in fold_run(cfg, 0).history.read_text().splitlines()[1:]
    ]
    assert history == pytest.approx(expected, rel=1e-6)
    # the evaluation's figures with their intervals, as metrics.json has them
    metrics = json.loads((fold_run(cfg, 0).evaluation / "metrics.json").read_text())
    low, high = metrics["ci95"]["accuracy"]
    assert runs.loc[0, "metrics.best_val_auc"] == pytest.approx(
        json.loads(fold_run(cfg, 0).summary.read_text())["best_value"]
    )
    found = client.get_run(run_id).data.metrics
    assert found["eval_accuracy"] == pytest.approx(metrics["accuracy"])
    assert (found["eval_accuracy_ci_low"], found["eval_accuracy_ci_high"]) == pytest.approx(
        (low, high)
    )
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"MODEL_CARD.md", "MODEL_CARD.html", "fold0"} <= artifacts
    inside = {a.path for a in client.list_artifacts(run_id, "fold0")}
    assert {"fold0/config.yaml", "fold0/history.png", "fold0/provenance.json"} <= inside
    card = client.download_artifacts(run_id, "MODEL_CARD.md", str(tmp_path / "got"))
    assert Path(card).read_text() == (tmp_path / "runs" / "tiny" / "MODEL_CARD.md").read_text()


def test_tracking_without_mlflow_is_one_line(synthetic_dataset, tmp_path, monkeypatch) -> None:
    import builtins

    from cxr.train import train_folds

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    cfg = tiny_config(synthetic_dataset, tmp_path / "runs", "train.tracking=mlflow")
    with pytest.raises(ConfigError, match=r"pip install 'cxr\[mlflow\]'"):
        train_folds(cfg, [0])
    assert not (tmp_path / "runs" / "tiny" / "fold0").exists()


def test_a_store_mlflow_refuses_is_one_line_before_training(
    synthetic_dataset, tmp_path, monkeypatch
) -> None:
    """MLflow 3 refuses a plain-folder store: said in one line, before any run folder."""
    pytest.importorskip("mlflow")
    from cxr.train import train_folds

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "folder-store").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    cfg = tiny_config(synthetic_dataset, tmp_path / "runs", "train.tracking=mlflow")
    with pytest.raises(ConfigError, match=r"mlflow cannot use the store file://") as caught:
        train_folds(cfg, [0])
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs" / "tiny").exists()
