"""The command line: help, exit codes, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxr.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_help_lists_the_four_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cxr.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("download", "train", "evaluate", "explain"):
        assert command in result.stdout


def test_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: -1\n")
    result = runner.invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "train.epochs = -1 is not allowed" in result.output


def test_bad_override_exits_2() -> None:
    result = runner.invoke(
        app, ["evaluate", "--config", str(REPO / "configs" / "pna.yaml"), "train.epochz=3"]
    )
    assert result.exit_code == 2 and "did you mean 'epochs'" in result.output


def test_missing_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["explain"])
    assert result.exit_code == 2 and "no --config given and no ./cxr.yaml" in result.output


def test_download_synthetic_and_errors(tmp_path: Path) -> None:
    args = [
        "download",
        "synthetic",
        "--dest",
        str(tmp_path),
        "--n",
        "30",
        "--size",
        "32",
        "--folds",
        "3",
        "--quiet",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "synthetic-pneumonia" / "labels.csv").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    unknown = runner.invoke(app, ["download", "kaggle", "--dest", str(tmp_path)])
    assert unknown.exit_code == 1 and "known sources: synthetic, nih-cxr14" in unknown.output
    parts = runner.invoke(app, ["download", "nih-cxr14", "--dest", str(tmp_path), "--parts", "x"])
    assert parts.exit_code == 2 and "--parts 'x'" in parts.output


def test_evaluate_line_names_sensitivity_specificity_and_counts() -> None:
    """Rows are true classes, columns predicted, in class order; the positive class is either."""
    from dataclasses import replace

    from cxr.cli.present import describe_metrics
    from cxr.results.evaluation import Metrics

    base = Metrics(
        roc_auc=0.9,
        accuracy=0.8,
        n=141,
        sensitivity=57 / 69,
        specificity=53 / 72,
        precision=57 / 76,
        f1=114 / 145,
        classes=["a", "b", "c"],
    )
    second = replace(
        base,
        classes=["normal", "tb"],
        positive_class="tb",
        confusion_matrix=[[53, 19], [12, 57]],
    )
    assert describe_metrics(second).endswith(
        "tb: sensitivity 0.826, specificity 0.736 (TP 57, FN 12, TN 53, FP 19)"
    )
    first = replace(second, classes=["tb", "normal"], confusion_matrix=[[57, 12], [19, 53]])
    assert describe_metrics(first) == describe_metrics(second)
    assert describe_metrics(base) == "ROC AUC 0.900, accuracy 0.800 (n = 141)"


def test_usage_errors_answer_before_tensorflow_is_imported(tmp_path: Path) -> None:
    """--help, a bad --shard, an unknown method or baseline, a missing config: one line each, in
    a process that never imports TensorFlow."""
    code = textwrap.dedent(
        """
        import sys
        from typer.testing import CliRunner
        from cxr.cli import app
        for args in (
            ["--help"],
            ["explain", "--shard", "x"],
            ["explain", "--method", "nope"],
            ["audit", "--methods", "gradcam,gradcm"],
            ["audit", "--baseline", "grey"],
            ["train", "--config", "missing.yaml"],
        ):
            result = CliRunner().invoke(app, args)
            print(result.exit_code, result.output.strip().splitlines()[-1])
        print("tensorflow" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "False", done.stdout + done.stderr[-2000:]
    assert [line.split()[0] for line in lines[:-1]] == ["0", "2", "2", "2", "2", "2"]
    assert "did you mean 'gradcam'?" in lines[3]
