"""`cxr explain` on a trained fold: overlays sorted right/wrong, the report, reruns, shards,
targets, errors."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image
from typer.testing import CliRunner

from cxr.cli import app
from cxr.config import dump_config
from cxr.errors import CxrError, DataError
from cxr.explain import run as explain_run
from cxr.explain.options import ExplainOptions, parse_shard
from cxr.explain.overlay import blend
from cxr.explain.run import explain_fold, explain_folds, frozen_heap
from cxr.runs import command_dir, experiment_dir, fold_run

REQUIRED = [
    "fold",
    "image",
    "patient_id",
    "true_class",
    "predicted_class",
    "confidence",
    "correct",
    "outcome",
    "prob_normal",
    "prob_pneumonia",
    "method",
    "layer",
    "target",
    "target_class",
    "raw_peak",
    "empty",
    "peak_x",
    "peak_y",
    "peak_in_box",
    "box_energy_share",
    "overlay",
]


@pytest.fixture(scope="module")
def explained(trained_run):
    return explain_fold(trained_run, 1, ExplainOptions(save_maps=True, overwrite=True))


def test_every_validation_image_gets_an_overlay_and_a_row(trained_run, explained) -> None:
    split = pd.read_csv(fold_run(trained_run, 1).split, dtype=str)
    validation = sorted(split[split["split"] == "validation"]["image"])
    report = pd.read_csv(explained.folder / "report.csv")
    assert sorted(report["image"]) == validation
    assert [c for c in REQUIRED if c not in report.columns] == []
    for row in report.itertuples():
        assert (
            row.overlay == f"{row.correct}/{Path(row.image).with_suffix('.jpg').name}"
            and (explained.folder / row.overlay).is_file()
        )
        assert (row.correct == "right") == (row.true_class == row.predicted_class)
    on_disk = sorted(
        p.name for kind in ("right", "wrong") for p in (explained.folder / kind).glob("*.jpg")
    )
    assert on_disk == sorted(Path(i).with_suffix(".jpg").name for i in validation)
    np.testing.assert_allclose(report["prob_normal"] + report["prob_pneumonia"], 1, atol=1e-5)
    assert (report["target_class"] == report["predicted_class"]).all()
    assert set(report["outcome"]) <= {"TP", "FP", "TN", "FN"}
    summary = json.loads((explained.folder / "summary.json").read_text())
    assert summary["right"] + summary["wrong"] == len(validation) and summary["layer"] == "features"
    assert (explained.folder / "montage.png").is_file()
    from cxr.explain.review import page_template

    assert (explained.folder / "index.html").read_text() == page_template()
    assert (explained.folder / "review.js").is_file()
    # one film per image, the stored image itself (the review page's detail view shows it)
    for row in report.itertuples():
        film = np.asarray(Image.open(explained.folder / row.film))
        stored = np.asarray(Image.open(trained_run.data.dataset_dir / row.image).convert("L"))
        assert film.shape == stored.shape and np.abs(film.astype(int) - stored).mean() < 3


def test_saved_maps_equal_an_independent_gradcam_of_the_predicted_class(
    trained_run, explained
) -> None:
    model = keras.models.load_model(fold_run(trained_run, 1).model, compile=False)
    both = keras.Model(model.input, [model.get_layer("features").output, model.output])
    maps = np.load(explained.folder / "maps.npz")
    dataset = trained_run.data.dataset_dir
    for row in explained.report.head(6).itertuples():
        image = np.asarray(
            keras.utils.load_img(dataset / row.image, color_mode="grayscale"), dtype="float32"
        )[None, ..., None]
        with tf.GradientTape() as tape:
            activations, logits = both(image, training=False)
            target = logits[0, int(np.argmax(logits[0]))]
        grads = tape.gradient(target, activations)[0].numpy()
        raw = np.maximum((activations[0].numpy() * grads.mean(axis=(0, 1))).sum(-1), 0)
        np.testing.assert_allclose(maps[f"{row.image}/raw"], raw, atol=1e-5, rtol=1e-4)
        assert maps[f"{row.image}/upsampled"].shape == (64, 64)
        assert row.raw_peak == pytest.approx(raw.max(), abs=1e-5)


def test_rerun_skips_done_images_and_overwrite_redoes_them(trained_run, explained) -> None:
    overlay = explained.folder / explained.report["overlay"].iloc[0]
    before = overlay.stat().st_mtime_ns
    again = explain_fold(trained_run, 1, ExplainOptions())
    assert overlay.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(
        again.report.reset_index(drop=True),
        pd.read_csv(explained.folder / "report.csv"),
        check_dtype=False,
    )
    explain_fold(trained_run, 1, ExplainOptions(overwrite=True))
    assert overlay.stat().st_mtime_ns != before


def test_a_retrained_fold_is_explained_afresh(trained_run, explained, tmp_path: Path) -> None:
    run = fold_run(trained_run, 1)
    backup = tmp_path / "model.keras"
    backup.write_bytes(run.model.read_bytes())
    try:
        model = keras.models.load_model(run.model, compile=False)
        model.get_layer("logits").set_weights(
            [w * 2 for w in model.get_layer("logits").get_weights()]
        )
        model.save(run.model)  # as if `cxr train --overwrite` had made a new model
        report = explain_fold(trained_run, 1, ExplainOptions()).report
        assert report["raw_peak"].to_numpy() == pytest.approx(
            2 * explained.report["raw_peak"].to_numpy(), rel=1e-4
        )
    finally:
        run.model.write_bytes(backup.read_bytes())


def test_xla_and_padded_batches_give_the_plain_report(trained_run, explained) -> None:
    """explain.xla with a batch size that leaves a short last batch (padded to one shape): the same
    maps and rows."""
    cfg = trained_run.model_copy(
        update={"explain": trained_run.explain.model_copy(update={"xla": True, "batch_size": 10})}
    )
    report = explain_fold(cfg, 1, ExplainOptions(overwrite=True)).report
    assert len(report) % 10 and len(report) == len(explained.report)
    for column in ("raw_peak", "confidence", "prob_pneumonia"):
        np.testing.assert_allclose(report[column], explained.report[column], rtol=1e-4, atol=1e-6)
    for column in ("predicted_class", "target_class", "peak_x", "peak_y", "correct"):
        assert report[column].tolist() == explained.report[column].tolist()


def test_overlays_reuse_the_decoded_pixels_and_match_the_files(trained_run, monkeypatch) -> None:
    """Stored size = model size (64 px): the overlays are drawn from the pipeline's pixels, with no
    second read of the source images, and are identical to overlays drawn from the files."""
    from cxr.explain import rows as explain_rows

    dataset, original_open = trained_run.data.dataset_dir, Image.open

    # overlays and the montage may be opened, source images not
    def no_source_reading(path, *args, **kwargs):
        if Path(path).is_relative_to(dataset):
            raise AssertionError(f"the source image {path} was read a second time")
        return original_open(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(explain_rows.Image, "open", no_source_reading)
        reused = explain_fold(trained_run, 1, ExplainOptions(overwrite=True))
    drawn = {
        row.overlay: np.asarray(Image.open(reused.folder / row.overlay))
        for row in reused.report.itertuples()
    }
    with monkeypatch.context() as patch:
        patch.setattr(
            explain_rows,
            "stored_pixels",
            lambda path, row, pixels: np.asarray(original_open(path).convert("L")),
        )
        from_files = explain_fold(trained_run, 1, ExplainOptions(overwrite=True))
    for overlay, pixels in drawn.items():
        np.testing.assert_array_equal(np.asarray(Image.open(from_files.folder / overlay)), pixels)


def test_shards_partition_the_fold_and_merge(trained_run) -> None:
    folder = command_dir(experiment_dir(trained_run), "explain", 0)
    first = explain_fold(trained_run, 0, ExplainOptions(shard=(1, 2), overwrite=True))
    second = explain_fold(trained_run, 0, ExplainOptions(shard=(2, 2), overwrite=True))
    a, b = set(first.report["image"]), set(second.report["image"])
    split = pd.read_csv(fold_run(trained_run, 0).split, dtype=str)
    assert not a & b and a | b == set(split[split["split"] == "validation"]["image"])
    assert (folder / "report.shard1of2.csv").is_file() and (
        folder / "report.shard2of2.csv"
    ).is_file()
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("[rw]*/*.jpg")}
    assert len(stamps) == len(a | b)
    merged = explain_fold(trained_run, 0, ExplainOptions())
    assert set(merged.report["image"]) == a | b
    assert {
        p: p.stat().st_mtime_ns for p in folder.glob("[rw]*/*.jpg")
    } == stamps  # nothing recomputed
    assert explain_fold(trained_run, 0, ExplainOptions(shard=(1, 2))).report[
        "image"
    ].tolist() == sorted(a)  # deterministic


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "2"])
def test_bad_shard(text: str) -> None:
    with pytest.raises(CxrError, match="--shard"):
        parse_shard(text)


def test_target_options(trained_run) -> None:
    true = explain_fold(trained_run, 1, ExplainOptions(target="true", overwrite=True)).report
    assert (true["target_class"] == true["true_class"]).all()
    named = explain_fold(trained_run, 1, ExplainOptions(target="pneumonia", overwrite=True)).report
    assert (named["target_class"] == "pneumonia").all()
    with pytest.raises(CxrError, match="--target 'covid': use predicted, true, a class name"):
        explain_fold(trained_run, 1, ExplainOptions(target="covid", overwrite=True))
    # both classes of a binary model, the predicted one first; its row is the single run's
    folder = command_dir(experiment_dir(trained_run), "explain", 1)
    shutil.rmtree(folder / "films")
    both = explain_fold(trained_run, 1, ExplainOptions(target="top2", overwrite=True)).report
    assert len(both) == 2 * len(true)
    # one film per image, written once, named by both of its rows
    assert (both.groupby("image")["film"].nunique() == 1).all()
    assert sorted(p.name for p in (folder / "films").iterdir()) == sorted(
        Path(f).name for f in both["film"].unique()
    )
    for image, rows in both.groupby("image"):
        assert rows["target_class"].tolist()[0] == rows["predicted_class"].iloc[0]
        assert set(rows["target_class"]) == {"normal", "pneumonia"}
        first = named if rows["target_class"].iloc[0] == "pneumonia" else None
        if first is not None:
            single = first.set_index("image").loc[image]
            assert rows["raw_peak"].iloc[0] == pytest.approx(single["raw_peak"], rel=1e-5)


def test_other_methods_run_through_the_same_path(trained_run) -> None:
    from cxr.catalogs.methods import METHOD_NAMES

    for method in METHOD_NAMES:  # every method the config accepts runs on a real trained model
        report = explain_fold(trained_run, 1, ExplainOptions(method=method, overwrite=True)).report
        assert (
            (report["method"] == method).all() and len(report) and report["raw_peak"].notna().all()
        )
    with pytest.raises(CxrError, match="unknown explanation method 'lime'"):
        explain_fold(trained_run, 1, ExplainOptions(method="lime"))


def test_the_heap_is_frozen_for_the_fold_only(trained_run, monkeypatch) -> None:
    """The collector skips the libraries' objects while a fold runs, and gets them back after; a
    caller's own freeze is left as it was."""
    seen, real = [], explain_run.explain_rows

    def spy(ctx, todo):
        seen.append(gc.get_freeze_count())
        return real(ctx, todo)

    monkeypatch.setattr(explain_run, "explain_rows", spy)
    assert gc.get_freeze_count() == 0
    explain_fold(trained_run, 1, ExplainOptions(overwrite=True))
    assert seen[0] > 1000 and gc.get_freeze_count() == 0
    gc.freeze()
    try:
        theirs = gc.get_freeze_count()
        with frozen_heap():
            assert gc.get_freeze_count() == theirs
        assert gc.get_freeze_count() == theirs
    finally:
        gc.unfreeze()


def test_the_fold_is_explained_with_its_batch_norms_fused(trained_run, monkeypatch) -> None:
    """The fused copy is what runs, and its probabilities are the saved model's."""
    seen, real = [], explain_run.fuse_batch_norm

    def spy(model, keep=()):
        seen.append(real(model, keep))
        return seen[-1]

    monkeypatch.setattr(explain_run, "fuse_batch_norm", spy)
    report = explain_fold(trained_run, 1, ExplainOptions(overwrite=True)).report
    kinds = {type(layer).__name__ for layer in seen[0].layers}
    assert "Identity" in kinds and "BatchNormalization" not in kinds
    model = keras.models.load_model(fold_run(trained_run, 1).model, compile=False)
    dataset = trained_run.data.dataset_dir
    images = np.stack(
        [
            np.asarray(keras.utils.load_img(dataset / name, color_mode="grayscale"), "float32")
            for name in report["image"]
        ]
    )[..., None]
    probabilities = tf.nn.softmax(model(images, training=False)).numpy()
    np.testing.assert_allclose(
        report[["prob_normal", "prob_pneumonia"]].to_numpy(), probabilities, atol=1e-6
    )


def test_all_folds_report(trained_run) -> None:
    _, combined = explain_folds(trained_run, [0, 1], ExplainOptions())
    assert sorted(combined["fold"].unique()) == [0, 1]
    assert (Path(trained_run.experiment.output_dir) / "tiny" / "explain" / "report.csv").is_file()


def test_untrained_fold(trained_run, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fold 4 of experiment 'tiny' was never trained"):
        explain_fold(trained_run, 4, ExplainOptions())
    config = tmp_path / "c.yaml"
    config.write_text(dump_config(trained_run))
    result = CliRunner().invoke(app, ["explain", "--config", str(config), "--fold", "4"])
    assert (
        result.exit_code == 1
        and "never trained" in result.output
        and "Traceback" not in result.output
    )


def test_explain_without_config_uses_the_last_trained_run(
    trained_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink(trained_run.experiment.output_dir, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["explain", "--fold", "1"])
    assert result.exit_code == 0, result.output
    assert "using the last trained experiment" in result.output and "fold 1:" in result.output


def test_overlay_formats_keep_the_pixels(tmp_path: Path) -> None:
    """PNG gives back the drawn pixels exactly; JPEG (quality 95, no chroma subsampling) within a
    few levels, thin white box outlines included."""
    from cxr.data.labels import Box
    from cxr.explain.overlay import draw_overlay, write_overlay

    rng = np.random.default_rng(0)
    grey = rng.integers(40, 200, (96, 128), dtype=np.uint8)
    heat = np.outer(np.hanning(96), np.hanning(128)).astype(np.float32)
    pixels = draw_overlay(grey, heat, "jet", 0.4, False, [Box(20, 30, 40, 25)])
    write_overlay(pixels, tmp_path / "a.png")
    write_overlay(pixels, tmp_path / "a.jpg")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)
    jpeg = np.asarray(Image.open(tmp_path / "a.jpg")).astype(int)
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"
    error = np.abs(jpeg - pixels.astype(int))
    assert error.mean() < 3 and np.percentile(error, 99) < 16
    assert (jpeg[30, 20:60] > 200).all()  # the box's top edge is still white
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png"]  # no temporary left


def test_png_overlays_when_asked(trained_run) -> None:
    cfg = trained_run.model_copy(
        update={"explain": trained_run.explain.model_copy(update={"overlay_format": "png"})}
    )
    result = explain_fold(cfg, 1, ExplainOptions(overwrite=True))
    assert result.report["overlay"].str.endswith(".png").all()
    assert all(Image.open(result.folder / o).format == "PNG" for o in result.report["overlay"])


def test_blend_extremes() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    heat = np.linspace(0, 1, 64).reshape(8, 8)
    assert (blend(grey, heat, "jet", 0.0) == np.repeat(grey[..., None], 3, -1)).all()
    import matplotlib

    expected = np.round(matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)
    assert np.abs(blend(grey, heat, "jet", 1.0).astype(int) - expected).max() <= 1
    with pytest.raises(TypeError, match="uint8 grey image, not uint16"):
        blend(grey.astype(np.uint16) * 256, heat)  # 16-bit levels would index past the table's rows


@pytest.mark.parametrize("colormap", ["jet", "viridis", "magma_r"])
def test_blend_equals_matplotlib_colouring(colormap: str) -> None:
    """The lookup-table blend against matplotlib's own float colouring, on random maps with exact 0
    and 1."""
    import matplotlib

    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    heat = rng.uniform(0, 1, (40, 50)).astype(np.float32)
    heat[0, :3] = [0.0, 1.0, 0.5]
    colours = matplotlib.colormaps[colormap](heat)[..., :3] * 255.0
    expected = np.round(0.6 * grey[..., None] + 0.4 * colours)
    # float32 vs float64 rounding
    assert np.abs(blend(grey, heat, colormap, 0.4).astype(int) - expected).max() <= 1


def test_review_data_quotes_links_and_cannot_close_a_script(tmp_path: Path) -> None:
    """Without a browser: names are data, links are URL-quoted and relative, '<' is escaped."""
    from cxr.explain.review import write_review
    from cxr.runs import EXPLAIN_FILES

    row = {
        "fold": 0,
        "image": "images/<script>x</script>.png",
        "patient_id": "p&1",
        "true_class": "a'b",
        "predicted_class": "a'b",
        "confidence": 0.9,
        "correct": "right",
        "target_class": "a'b",
        "overlay": "right/<script>x</script>.png",
        "method": "gradcam",
    }
    card = tmp_path / "card.html"
    card.write_text("card")
    (tmp_path / "fold0").mkdir()
    links = {"model card": card, "missing": tmp_path / "nothing.html"}  # only what exists
    table = pd.DataFrame({"image": []})
    write_review(tmp_path / "fold0", pd.DataFrame([row]), table, ["a'b", "c"], links)
    text = (tmp_path / "fold0" / EXPLAIN_FILES.review_data).read_text()
    assert "<" not in text
    data = json.loads(text.removeprefix("window.CXR_REVIEW = ").removesuffix(";\n"))
    assert data["rows"][0]["overlay"] == "right/%3Cscript%3Ex%3C/script%3E.png"
    assert data["rows"][0]["image"] == row["image"] and data["classes"] == ["a'b", "c"]
    assert data["links"] == [["model card", "../card.html"]]


def test_montage_sample_takes_turns_between_outcomes() -> None:
    """Not the first images in path order: every outcome, in turns, the same every time."""
    from cxr.explain.gallery import taking_turns

    report = pd.DataFrame(
        {"image": [f"{i:02d}" for i in range(20)], "outcome": ["TN"] * 16 + ["TP"] * 4}
    )
    picked = taking_turns(report, "outcome", 6)
    assert picked["outcome"].tolist() == ["TN", "TP", "TN", "TP", "TN", "TP"]
    assert picked.equals(taking_turns(report, "outcome", 6)) and set(picked["image"]) - set(
        report["image"][:6]
    )
    assert len(taking_turns(report.iloc[:0], "outcome", 6)) == 0


def test_fold_agreement_against_each_fold_model_alone(trained_run) -> None:
    """Fold 1's images through fold 0's model, image by image: the spread and the rank correlation
    the report gives."""
    from scipy.stats import spearmanr

    from cxr.data.pipeline import fold_dataset
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe
    from cxr.runs import fold_run

    result = explain_fold(trained_run, 1, ExplainOptions(fold_agreement=True))
    found = pd.read_csv(result.folder / "fold_agreement.csv").set_index("image")
    assert len(found) == len(result.report) and (found["other_folds"].astype(str) == "0").all()
    own, other = (make_probe(fold_run(trained_run, k).load_model()) for k in (1, 0))
    classes = fold_run(trained_run, 1).read_classes()
    settings = fold_run(trained_run, 1).read_config()
    for row in result.report.head(4).to_dict("records"):
        table = pd.DataFrame([{"image": row["image"], "label": row["true_class"]}])
        image = next(iter(fold_dataset(settings, table, classes, 1)))[0]
        target = np.array([classes.index(row["target_class"])])
        a, b = (explain_batch(p, image, target, "gradcam") for p in (own, other))
        rho = spearmanr(a.maps[0].ravel(), b.maps[0].ravel()).statistic
        if np.ptp(a.maps[0]) == 0 or np.ptp(b.maps[0]) == 0:
            rho = 0.0
        assert found.loc[row["image"], "mean_rank_correlation"] == pytest.approx(rho, abs=1e-4)
        p = [np.exp(e.logits[0]) / np.exp(e.logits[0]).sum() for e in (a, b)]
        spread = np.std([q[target[0]] for q in p])
        assert found.loc[row["image"], "probability_std"] == pytest.approx(spread, abs=1e-5)
    assert result.summary.fold_agreement.images == len(result.report)
    # the review page links the experiment's model card
    assert '["model card","../../MODEL_CARD.html"]' in (result.folder / "review.js").read_text()
