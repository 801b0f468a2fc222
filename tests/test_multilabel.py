"""Multi-label (one sigmoid per finding, as NIH ChestX-ray14): metrics by hand, and train ->
evaluate -> explain on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from sklearn.metrics import roc_auc_score

from cxr.data.labels import decode_boxes, read_labels
from cxr.data.sources import DownloadOptions, download
from cxr.errors import DataError
from cxr.evaluate import compute_multilabel_metrics, evaluate
from cxr.explain.run import ExplainOptions, explain_fold
from cxr.train import train


def test_multilabel_metrics_by_hand() -> None:
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.4], [0.3, 0.8, 0.1], [0.6, 0.3, 0.7], [0.2, 0.6, 0.2]])
    m = compute_multilabel_metrics(truth, probs, ["a", "b", "c"])
    guess = probs >= 0.5  # a: all right; b: 1 TP, 1 FN, 1 FP, 1 TN; c: 1 FN, 1 FP, 2 TN
    assert m.per_class["a"].sensitivity == 1 and m.per_class["b"].sensitivity == 0.5
    assert m.per_class["c"].sensitivity == 0 and m.per_class["c"].specificity == pytest.approx(
        2 / 3
    )
    assert m.accuracy == pytest.approx(
        (guess == truth).mean()
    ) and m.subset_accuracy == pytest.approx(1 / 4)
    aucs = [roc_auc_score(truth[:, c], probs[:, c]) for c in range(3)]
    assert m.roc_auc == pytest.approx(np.mean(aucs))
    assert m.confusion_matrices["b"] == [[1, 1], [1, 1]]


@pytest.fixture(scope="module")
def nih_multilabel(nih_sample: Path, tmp_path_factory: pytest.TempPathFactory):
    """The NIH fixture with every finding (multi-label), 64 px, 2 folds; tiny_cnn trained one epoch
    on fold 0. Returns (dataset folder, config, train result)."""
    root = tmp_path_factory.mktemp("nih")
    folder = download(
        "nih-cxr14",
        DownloadOptions(
            dest=root, from_dir=nih_sample, task="all", size=64, folds=2, show_progress=False
        ),
    )
    cfg = tiny_config(
        folder, root / "runs", "data.multi_label=true", "train.epochs=1", "train.monitor=val_loss"
    )
    return folder, cfg, train(cfg, fold=0)


def test_nih_multilabel_train_evaluate_explain(nih_multilabel, tmp_path: Path) -> None:
    folder, cfg, result = nih_multilabel
    with pytest.raises(
        DataError, match=r"dataset nih-cxr14-all is multi-label: set data\.multi_label: true"
    ):
        train(tiny_config(folder, tmp_path / "runs"), fold=0)
    assert len(json.loads(result.run.classes.read_text())) == 15  # 14 findings + No Finding
    evaluation = evaluate(cfg, [0])
    metrics = evaluation.per_fold[0]
    assert metrics.multi_label and len(metrics.per_class) == 15 and 0 <= metrics.roc_auc <= 1
    predictions = pd.read_csv(result.run.evaluation / "predictions.csv")
    validation = pd.read_csv(result.run.split).query("split == 'validation'")
    assert (predictions.filter(like="prob_").to_numpy() <= 1).all() and len(predictions) == len(
        validation
    ) > 0
    report = explain_fold(cfg, 0, ExplainOptions(target="true")).report
    assert len(report) == len(predictions)
    assert all(
        t in truth.split("|")
        for t, truth in zip(report["target_class"], report["true_class"], strict=True)
    )
    assert (
        set(report["correct"]) <= {"right", "wrong"} and (report["outcome"].fillna("") == "").all()
    )


def test_several_classes_per_image(nih_multilabel) -> None:
    """--target top2 and all-positive on a multi-label model: a row, an overlay and a saved map per
    (image, class), the classes those the probabilities name, a verdict per class, and a rerun
    that recomputes nothing."""
    import zipfile

    from cxr.errors import ConfigError

    _, cfg, result = nih_multilabel
    explained_top2 = explain_fold(cfg, 0, ExplainOptions(target="top2", save_maps=True))
    top2 = explained_top2.report
    validation = pd.read_csv(result.run.split).query("split == 'validation'")
    summary = explained_top2.summary
    assert summary.images == len(validation) and summary.rows == 2 * len(validation)
    assert summary.right + summary.wrong == summary.rows
    assert len(top2) == 2 * len(validation) and top2["image"].nunique() == len(validation)
    probs = top2.filter(like="prob_")
    classes = [c.removeprefix("prob_") for c in probs.columns]
    for _, rows in top2.groupby("image", sort=False):
        p = probs.loc[rows.index[0]].to_numpy()
        assert rows["target_class"].tolist() == [classes[k] for k in np.argsort(-p)[:2]]
        for row in rows.itertuples():
            said = (
                p[classes.index(row.target_class)] > 0.5
                or row.target_class == rows.iloc[0]["target_class"]
            )
            right = said == (row.target_class in row.true_class.split("|"))
            assert row.correct == ("right" if right else "wrong")
            assert row.overlay.endswith(f".{row.target_class}.jpg".replace(" ", "_"))
    explained = cfg.experiment.output_dir / "tiny" / "explain" / "fold0"
    assert all((explained / o).is_file() for o in top2["overlay"])
    with zipfile.ZipFile(explained / "maps.npz") as saved:
        keys = {n.removesuffix("/raw.npy") for n in saved.namelist() if n.endswith("/raw.npy")}
    assert keys == {f"{r.image}/{r.target_class}" for r in top2.itertuples()}
    stamps = {o: (explained / o).stat().st_mtime_ns for o in top2["overlay"]}
    again = explain_fold(cfg, 0, ExplainOptions(target="top2")).report
    assert len(again) == len(top2)
    assert {o: (explained / o).stat().st_mtime_ns for o in top2["overlay"]} == stamps

    positive = explain_fold(cfg, 0, ExplainOptions(target="all-positive", overwrite=True)).report
    assert positive["image"].nunique() == len(validation)
    for _, row in positive.iterrows():
        p = row[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
        k = classes.index(row["target_class"])
        assert p[k] > 0.5 or k == int(np.argmax(p))
    with pytest.raises(ConfigError, match="topK takes K from 1 to 15"):
        explain_fold(cfg, 0, ExplainOptions(target="top16"))
    with pytest.raises(ConfigError, match="--fold-agreement compares one map per image"):
        explain_fold(cfg, 0, ExplainOptions(target="top2", fold_agreement=True))
    # each finding's map is judged against that finding's own boxes, never another finding's: the
    # top-2 rows, and the rows of a boxed finding explained by name
    boxes = read_labels(nih_multilabel[0]).set_index("image")["boxes"].map(decode_boxes)
    finding = next(boxes[i][0].label for i in top2["image"] if boxes[i])
    named = explain_fold(cfg, 0, ExplainOptions(target=finding, overwrite=True)).report
    counts = {"judged": 0, "other finding's box": 0}
    for row in pd.concat([top2, named]).itertuples():
        own = [b for b in boxes[row.image] if b.label == row.target_class]
        if not own or row.empty:
            assert np.isnan(row.peak_in_box), row
            counts["other finding's box"] += bool(boxes[row.image])
        else:
            counts["judged"] += 1
            hit = any(b.x <= row.peak_x < b.x + b.w and b.y <= row.peak_y < b.y + b.h for b in own)
            assert row.peak_in_box == float(hit)
    assert min(counts.values()) > 0, counts  # both branches were tried
