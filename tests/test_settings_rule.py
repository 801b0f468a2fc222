"""One rule for which settings apply after training: the run fixes the model and its input, the
command line the analysis."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cxr.config import check_analysis_overrides, fixed_differences, load_config
from cxr.data.labels import choose_positive_class
from cxr.errors import ConfigError


def test_overrides_that_change_what_the_run_fixes_are_refused() -> None:
    trained = load_config(None, ["model.name=tiny_cnn", "data.image_size=64"])
    for item in (
        "data.image_size=128",
        "model.name=pna_cnn",
        "model.widths=[4]",
        "data.channels=3",
    ):
        cfg = load_config(None, ["model.name=tiny_cnn", "data.image_size=64", item])
        with pytest.raises(ConfigError, match="is fixed by the trained run, which has"):
            check_analysis_overrides([item], cfg, trained)
    # restating the run's own value, and analysis settings, are fine
    same = ["data.image_size=64", "data.positive_class=normal", "explain.alpha=0.2", "data.fold=3"]
    check_analysis_overrides(same, load_config(None, ["model.name=tiny_cnn", *same]), trained)


def test_a_config_file_that_differs_from_the_run_is_named() -> None:
    trained = load_config(None, ["data.image_size=64", "model.name=tiny_cnn"])
    other = load_config(None, ["data.image_size=128", "model.name=tiny_cnn", "train.epochs=1"])
    # training-only settings do not matter to evaluate, explain or audit
    assert fixed_differences(trained, other) == ["data.image_size: 128 (trained with 64)"]


def test_the_guessed_positive_class_is_said(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert choose_positive_class(["alpha", "beta"]) == 1
        assert choose_positive_class(["no_effusion", "zeta"]) == 1
        assert choose_positive_class(["alpha", "beta"]) == 1  # said once
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "positive class guessed: 'beta' (no single class is named normal/negative/no_*, so the "
        "second of alpha, beta was taken); set data.positive_class=alpha to choose the other",
        "positive class: 'zeta', the class not named normal/negative/no_*; set "
        "data.positive_class=no_effusion to choose the other",
    ]


def test_explain_and_evaluate_count_the_same_positives(trained_run, tmp_path: Path) -> None:
    """data.positive_class given on the command line reaches explain as it reaches evaluate."""
    from typer.testing import CliRunner

    from cxr.cli import app
    from cxr.config import dump_config

    runs = tmp_path / "runs"
    source = trained_run.experiment.output_dir / trained_run.experiment.name / "fold1"
    shutil.copytree(
        source,
        runs / trained_run.experiment.name / "fold1",
        ignore=shutil.ignore_patterns("evaluation"),
    )
    config = tmp_path / "c.yaml"
    config.write_text(dump_config(trained_run))
    common = ["--config", str(config), "--fold", "1", f"experiment.output_dir={runs}"]
    positive = ["data.positive_class=normal"]  # the trained run guessed pneumonia
    for command in ("evaluate", "explain"):
        result = CliRunner().invoke(app, [command, *common, *positive])
        assert result.exit_code == 0, result.output
    predictions = pd.read_csv(runs / "tiny" / "fold1" / "evaluation" / "predictions.csv")
    normal = predictions["true_label"] == "normal"
    said_normal = predictions["predicted_label"] == "normal"
    expected = {
        "TP": int((normal & said_normal).sum()),
        "FN": int((normal & ~said_normal).sum()),
        "TN": int((~normal & ~said_normal).sum()),
        "FP": int((~normal & said_normal).sum()),
    }
    report = pd.read_csv(runs / "tiny" / "explain" / "fold1" / "report.csv")
    counted = report["outcome"].value_counts().to_dict()
    assert {k: counted.get(k, 0) for k in expected} == expected
    refused = CliRunner().invoke(app, ["explain", *common, "data.image_size=128"])
    assert (
        refused.exit_code == 2 and "data.image_size is fixed by the trained run" in refused.output
    )
