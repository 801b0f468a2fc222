"""data.outside_lungs: what lies outside the lungs and mediastinum is filled or blurred in
training and in every later read, checked against numpy and scipy by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from scipy import ndimage

from cxr.data.labels import read_labels
from cxr.data.lungfields import MARGIN, kept_spans, lung_region, spans_mask
from cxr.data.pipeline import make_dataset
from cxr.errors import DataError


def test_kept_spans_by_hand() -> None:
    lungs = np.zeros((40, 50), dtype=bool)
    lungs[10:20, 5:11] = True  # right lung (image left)
    lungs[12:22, 30:36] = True  # left lung
    spans = kept_spans(lungs, margin=0.04)  # 2 px at 50 px
    assert spans[9].tolist() == [0, 0] and spans[22].tolist() == [0, 0]
    assert spans[10].tolist() == [3, 13]  # one lung in this row: 5..10, widened by 2
    assert spans[15].tolist() == [3, 38]  # both: from 5 to 35 (heart between them kept), + 2
    assert spans[21].tolist() == [28, 38]
    mask = spans_mask(spans, 50)
    assert mask[15, 3:38].all() and not mask[15, :3].any() and not mask[15, 38:].any()
    assert not mask[:10].any()


def images_of(folder: Path, table: pd.DataFrame, mode: str) -> np.ndarray:
    ds = make_dataset(
        folder, table, ["normal", "pneumonia"], image_size=64, batch_size=64, outside_lungs=mode
    )
    return np.concatenate([x.numpy() for x, _ in ds])[..., 0]


def test_fill_and_blur_against_numpy_and_scipy(synthetic_dataset: Path) -> None:
    table = read_labels(synthetic_dataset).head(6)
    plain = images_of(synthetic_dataset, table, "keep")
    filled = images_of(synthetic_dataset, table, "fill")
    blurred = images_of(synthetic_dataset, table, "blur")
    for i, row in enumerate(table.to_dict("records")):
        lungs = lung_region(synthetic_dataset, row, (64, 64))
        assert lungs is not None and lungs.any()
        kept = spans_mask(kept_spans(lungs, MARGIN), 64)
        assert 0.2 < kept.mean() < 0.9  # some film is outside
        np.testing.assert_allclose(filled[i], np.where(kept, plain[i], plain[i].mean()), atol=1e-4)
        by_scipy = ndimage.gaussian_filter(plain[i].astype(np.float64), 0.05 * 64, mode="reflect")
        np.testing.assert_allclose(blurred[i], np.where(kept, plain[i], by_scipy), atol=1e-3)
        assert np.abs(blurred[i] - plain[i])[~kept].max() > 1  # the outside really changed


def test_a_fold_trained_with_fill_is_read_with_fill(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """The setting is the run's: evaluate and explain read the images as training did, an
    override is refused, and a dataset without lung fields is refused with its command."""
    from typer.testing import CliRunner

    from cxr.cli import app
    from cxr.data.pipeline import fold_dataset
    from cxr.runs import fold_run
    from cxr.train import train_folds

    cfg = tiny_config(synthetic_dataset, tmp_path / "runs", "data.outside_lungs=fill")
    train_folds(cfg, [0])
    settings = fold_run(cfg, 0).read_config()
    assert settings.data.outside_lungs == "fill"
    table = read_labels(synthetic_dataset).head(4)
    seen = np.concatenate(
        [x.numpy() for x, _ in fold_dataset(settings, table, ["normal", "pneumonia"])]
    )
    np.testing.assert_allclose(seen[..., 0], images_of(synthetic_dataset, table, "fill"))
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"experiment: {{name: tiny, output_dir: {tmp_path / 'runs'}}}\n"
        f"data: {{root: {synthetic_dataset.parent}, dataset: {synthetic_dataset.name}}}\n"
    )
    refused = CliRunner().invoke(
        app, ["evaluate", "--config", str(config), "data.outside_lungs=keep"]
    )
    assert refused.exit_code == 2 and "data.outside_lungs" in refused.output
    bare = tmp_path / "data" / "bare"
    shutil.copytree(synthetic_dataset, bare)
    read_labels(bare).drop(columns=["lungs"]).to_csv(bare / "labels.csv", index=False)
    with pytest.raises(DataError, match="run `cxr lungs bare`"):
        make_dataset(
            bare, read_labels(bare), ["normal", "pneumonia"], image_size=64, outside_lungs="fill"
        )


def test_training_with_fill_on_a_read_only_dataset_without_lungs_is_one_line(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train would compute the lung fields first: on a dataset it cannot write to, the same one
    line as the audit's (the tests run as root, so the access check is what is replaced), and
    neither the dataset nor runs/ is touched."""
    import os

    from typer.testing import CliRunner

    from cxr.cli import app

    bare = tmp_path / "data" / "bare"
    shutil.copytree(synthetic_dataset, bare)
    read_labels(bare).drop(columns=["lungs"]).to_csv(bare / "labels.csv", index=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in bare.rglob("*"))
    monkeypatch.setattr(os, "access", lambda path, mode: "bare" not in str(path))
    config = tmp_path / "fill.yaml"
    config.write_text(
        f"experiment: {{name: bare, output_dir: {tmp_path / 'runs'}}}\n"
        f"data: {{root: {tmp_path / 'data'}, dataset: bare, image_size: 64, outside_lungs: fill}}\n"
        "model: {name: tiny_cnn}\ntrain: {epochs: 1}\n"
    )
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert "is read-only here" in errors[0] and "`cxr lungs bare --dest <that folder>`" in errors[0]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in bare.rglob("*")) == before
    assert not (tmp_path / "runs" / "bare" / "fold0").exists()
