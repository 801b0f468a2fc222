"""Data randomisation (Adebayo et al. 2018): a copy trained on permuted labels, its maps compared
with the real model's; the statistics recomputed here with scipy and scikit-image."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr.audit.sanity import SANITY_PASS
from cxr.data_randomisation import data_randomisation, permuted_labels


def test_permuted_labels_keep_the_counts_and_move_the_labels() -> None:
    labels = pd.Series(["a"] * 30 + ["b"] * 20)
    shuffled = permuted_labels(labels, [0, 1, 2])
    assert sorted(shuffled) == sorted(labels) and (shuffled != labels).any()
    assert shuffled.tolist() == permuted_labels(labels, [0, 1, 2]).tolist()  # seeded
    assert shuffled.tolist() != permuted_labels(labels, [0, 1, 3]).tolist()


def test_a_copy_on_permuted_labels_is_compared_map_by_map(trained_run) -> None:
    from cxr.runs import command_dir, experiment_dir

    result = data_randomisation(trained_run, 1, ["gradcam", "saliency"])
    assert 0 < result.labels_changed < 1 and result.epochs == 2
    for method, (a, b) in result.maps.items():
        part = result.rows[result.rows["method"] == method]
        assert len(part) == len(a) > 0 and not np.allclose(a, b)
        rho = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
        rho = [0.0 if np.isnan(r) else r for r in rho]  # a flat map ranks nothing
        ssim = [structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)]
        np.testing.assert_allclose(part["spearman"], rho, atol=1e-4)
        np.testing.assert_allclose(part["ssim"], ssim, atol=1e-6)
        check = result.checks[method]
        assert check.spearman == pytest.approx(np.mean(rho), abs=1e-4)
        assert check.passes == (check.spearman < SANITY_PASS)
    saved = json.loads(
        (
            command_dir(experiment_dir(trained_run), "audit", 1) / "data_randomisation.json"
        ).read_text()
    )
    assert saved["checks"]["gradcam"]["ssim"] == pytest.approx(result.checks["gradcam"].ssim)


def test_the_cli_flag_and_its_refusal(trained_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from cxr.cli import app

    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"experiment: {{name: tiny, output_dir: {trained_run.experiment.output_dir}}}\n"
        f"data: {{root: {trained_run.data.root}, dataset: {trained_run.data.dataset}}}\n"
    )
    refused = CliRunner().invoke(
        app,
        [
            "audit",
            "--config",
            str(config),
            "--data-randomisation",
            "--on",
            trained_run.data.dataset,
        ],
    )
    assert refused.exit_code == 2 and "without --on" in refused.output
    ran = CliRunner().invoke(
        app,
        [
            "audit",
            "--config",
            str(config),
            "--fold",
            "0",
            "--methods",
            "guided_backprop",
            "--stages",
            "1",
            "--data-randomisation",
        ],
    )
    assert ran.exit_code == 0, ran.output
    # the terminal shows text, the card Markdown (its underscore escaped)
    assert "fold 0, guided_backprop: data randomisation" in ran.output
    card = (trained_run.experiment.output_dir / "tiny" / "MODEL_CARD.md").read_text()
    assert "fold 0, guided\\_backprop: data randomisation" in card
