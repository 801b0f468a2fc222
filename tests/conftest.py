"""Shared fixtures: one small synthetic dataset for the whole session, and the real NIH sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr.data.sources import DownloadOptions, download

REPO = Path(__file__).resolve().parents[1]
NIH_SAMPLE = REPO.parent / "shared" / "data" / "nih-cxr14-sample"


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 pneumonia phantoms at 64 px, 5 folds."""
    dest = tmp_path_factory.mktemp("data")
    return download("synthetic", DownloadOptions(dest=dest, n=120, size=64, folds=5, seed=3, show_progress=False))


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    if not NIH_SAMPLE.is_dir():
        pytest.fail(f"the NIH sample is missing at {NIH_SAMPLE}; CI keeps it at ../shared/data/nih-cxr14-sample")
    return NIH_SAMPLE
