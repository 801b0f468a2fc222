"""Shared fixtures: one small synthetic dataset for the whole session, and a real NIH fixture in the
repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.data.sources import DownloadOptions, download

REPO = Path(__file__).resolve().parents[1]
NIH_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nih-cxr14-mini"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 pneumonia phantoms at 64 px, 5 folds."""
    dest = tmp_path_factory.mktemp("data")
    return download(
        "synthetic",
        DownloadOptions(dest=dest, n=120, size=64, folds=5, seed=3, show_progress=False),
    )


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """40 real NIH radiographs (128 px) in the release's format, committed with the tests."""
    return NIH_FIXTURE


def tiny_config(dataset: Path, runs: Path, *overrides: str):
    """A tiny_cnn experiment on a dataset, through the same code path as real runs."""
    from cxr.config import load_config

    base = [
        "experiment.name=tiny",
        f"experiment.output_dir={runs}",
        f"data.root={dataset.parent}",
        f"data.dataset={dataset.name}",
        "data.image_size=64",
        "model.name=tiny_cnn",
        "train.epochs=2",
        "train.batch_size=16",
        "train.learning_rate=0.01",
    ]
    return load_config(None, [*base, *overrides])


@pytest.fixture(scope="session")
def trained_run(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """tiny_cnn trained for 2 epochs on folds 0 and 1 of the synthetic dataset; shared by
    evaluate/explain tests."""
    from cxr.train import train_folds

    cfg = tiny_config(synthetic_dataset, tmp_path_factory.mktemp("runs"))
    train_folds(cfg, [0, 1])
    return cfg
