"""The model card is made from the run's files: change a file, and the card says the new value."""

from __future__ import annotations

import json

from cxr.documents import write_documents as write_model_card
from cxr.evaluate import evaluate
from cxr.runs import pooled_evaluation_dir


def test_the_card_reads_every_figure_from_the_run(trained_run) -> None:
    evaluate(trained_run, [0, 1])
    folder = trained_run.experiment.output_dir / trained_run.experiment.name
    card = (folder / "MODEL_CARD.md").read_text()
    report = json.loads((pooled_evaluation_dir(trained_run) / "metrics.json").read_text())
    low, high = report["pooled"]["ci95"]["roc_auc"]
    assert f"| roc_auc | {report['pooled']['roc_auc']:.3f} [{low:.3f}, {high:.3f}] |" in card
    assert f"expected calibration error {report['pooled']['calibration']['ece']:.3f}" in card
    assert "Synthetic phantoms" in card and (folder / "MODEL_CARD.html").is_file()
    # a figure changed in the run's file is what the card says next time
    report["pooled"]["roc_auc"] = 0.123
    (pooled_evaluation_dir(trained_run) / "metrics.json").write_text(json.dumps(report))
    write_model_card(trained_run)
    assert "| roc_auc | 0.123 [" in (folder / "MODEL_CARD.md").read_text()
    evaluate(trained_run, [0, 1])  # as the other tests found it


def test_a_command_hands_the_card_what_it_found(trained_run, monkeypatch) -> None:
    """evaluate's card comes from the results in hand: metrics.json, just written, is not read
    back; what another command wrote (the explain summaries) is."""
    import cxr.findings

    read = []

    def reading(kind, path):
        read.append(path)
        return original(kind, path)

    original = cxr.findings.read_record
    monkeypatch.setattr(cxr.findings, "read_record", reading)
    evaluate(trained_run, [0, 1])
    metrics = pooled_evaluation_dir(trained_run) / "metrics.json"
    assert metrics.is_file() and metrics not in read
    folder = trained_run.experiment.output_dir / trained_run.experiment.name
    assert folder / "explain" / "fold0" / "summary.json" in read
    write_model_card(trained_run)  # a bare rewrite has nothing in hand: it reads the file
    assert metrics in read


def test_audit_lines_link_the_review_page_filtered_to_their_images(tmp_path) -> None:
    from dataclasses import replace

    from cxr.card import audit_lines_of
    from cxr.results.audit import (
        AuditSummary,
        Estimate,
        Intervention,
        Regions,
        Shortcuts,
    )

    flags = {"a b": ["93% of peaks in the top-left corner"]}
    shortcuts = Shortcuts("gradcam", "regions", 4, 0.5, 0.5, {}, ["a b"], Regions(4, {}, {}, flags))
    cost = Estimate(-0.5, -0.6, -0.4)
    filled = {
        region: Intervention(4, cost, cost, cost, 0.5, flagged=True)
        for region in ("top_left", "border")
    }
    summary = AuditSummary(
        0, [0], "features", {}, {}, {}, shortcuts, interventions={"normal": filled}
    )
    assert not any("](" in line for line in audit_lines_of(summary, tmp_path))  # no page yet
    (tmp_path / "explain" / "fold0").mkdir(parents=True)
    (tmp_path / "explain" / "fold0" / "index.html").write_text("page")
    text = "\n".join(audit_lines_of(summary, tmp_path))
    assert "(explain/fold0/index.html#predicted=a%20b&audit=flagged)" in text
    assert (
        "top_left ([maps peaking there](explain/fold0/index.html#predicted=normal&region=top_left))"
        in text
    )
    assert "#predicted=normal&region=border)" in text
    pooled = audit_lines_of(replace(summary, fold=None), tmp_path)
    assert not any("](" in line for line in pooled)


def test_a_dataset_without_a_task_is_described_without_one(trained_run) -> None:
    """A folder import has no task: the card's data line leaves it out rather than saying None."""
    dataset = trained_run.data.dataset_dir / "dataset.json"
    original = dataset.read_text()
    folder = trained_run.experiment.output_dir / trained_run.experiment.name
    try:
        dataset.write_text(json.dumps(json.loads(original) | {"task": None}))
        write_model_card(trained_run)
        line = next(
            x for x in (folder / "MODEL_CARD.md").read_text().splitlines() if "Dataset" in x
        )
        assert "(task" not in line and ", made by cxr" in line
        dataset.write_text(json.dumps(json.loads(original) | {"task": "pneumonia"}))
        write_model_card(trained_run)
        assert "(task pneumonia), made by cxr" in (folder / "MODEL_CARD.md").read_text()
    finally:
        dataset.write_text(original)
        write_model_card(trained_run)
