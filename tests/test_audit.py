"""The audit's metrics on hand-made maps, the randomisation, and `cxr audit` on a trained fold."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from cxr.audit.localisation import iobb, localisation_scores, summarise_localisation
from cxr.audit.run import audit_fold
from cxr.audit.sanity import randomised_copy, weighted_layers_top_down
from cxr.data.labels import Box
from cxr.errors import CxrError

BOX = [Box(10, 20, 8, 6)]  # columns 10..17, rows 20..25


def test_a_map_exactly_on_the_box_scores_one() -> None:
    heatmap = np.zeros((40, 40))
    heatmap[20:26, 10:18] = 1.0
    scores = localisation_scores(heatmap, BOX)
    assert (
        scores["pointing_hit"] == 1
        and scores["iou@0.5"] == 1
        and scores["iou@otsu"] == 1
        and scores["iobb"] == 1
    )
    assert scores["t(iobb)@0.5"] == 1


def test_a_map_outside_the_box_scores_zero() -> None:
    heatmap = np.zeros((40, 40))
    heatmap[0:5, 30:40] = 1.0
    scores = localisation_scores(heatmap, BOX)
    assert (
        scores["pointing_hit"] == 0
        and scores["iou@0.5"] == 0
        and scores["iobb"] == 0
        and scores["t(iobb)@0.1"] == 0
    )
    # an empty map points nowhere
    assert localisation_scores(np.zeros((40, 40)), BOX)["pointing_hit"] == 0


def test_iobb_of_a_region_twice_the_box() -> None:
    region = np.zeros((40, 40), bool)
    region[20:26, 10:26] = True  # 6 x 16: the box's 6 x 8 and as much again
    target = np.zeros((40, 40), bool)
    target[20:26, 10:18] = True
    assert iobb(region, target) == pytest.approx(0.5)


def test_iobb_agrees_with_scikit_image_regions() -> None:
    """IoBB's largest 8-connected region and its box, against scikit-image's label and
    regionprops (its former implementation): noise maps with thousands of specks, smooth maps,
    two regions of equal size (the first in raster order wins), diagonal touches."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    def by_regionprops(region: np.ndarray, target: np.ndarray) -> float:
        regions = regionprops(label(region))
        if not regions:
            return 0.0
        top, left, bottom, right = max(regions, key=lambda r: r.area).bbox
        return float(target[top:bottom, left:right].sum() / ((bottom - top) * (right - left)))

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    cases = []
    for _ in range(30):
        noise = rng.uniform(size=(64, 64))
        cases += [noise > threshold_otsu(noise), noise > 0.97]
        centre = rng.uniform(8, 56, 2)
        smooth = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / rng.uniform(20, 300))
        cases.append(smooth > threshold_otsu(smooth))
    twins = np.zeros((64, 64), bool)
    twins[40:44, 40:44] = twins[5:9, 50:54] = True  # equal areas: the upper one comes first
    diagonal = np.eye(64, dtype=bool) | np.eye(64, k=1, dtype=bool)[::-1]
    cases += [twins, diagonal, np.zeros((64, 64), bool)]
    for region in cases:
        target = np.zeros((64, 64), bool)
        y, x = rng.integers(0, 48, 2)
        target[y : y + 16, x : x + 20] = True
        assert iobb(region, target) == pytest.approx(by_regionprops(region, target), abs=1e-12)
    target = np.zeros((64, 64), bool)
    target[5:9, 50:54] = True
    assert iobb(twins, target) == 1.0  # the first of two equal regions


def test_a_multi_label_image_is_explained_for_its_boxed_finding() -> None:
    """Findings a, b, c: an image with a and c true and a box around c is explained for c; one
    with no box of a true finding (or none at all) for its first true finding."""
    from cxr.audit.sweep import explained_findings

    labels = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0]], dtype="float32")
    boxes = [[Box(0, 0, 2, 2, "c")], [Box(0, 0, 2, 2, "a")], []]
    assert explained_findings(labels, boxes, ["a", "b", "c"]).tolist() == [2, 1, 0]


def test_localisation_intervals_resample_patients() -> None:
    """Patient a's four images all hit, patient b's one misses: a resample of two patients has a
    mean of 1, 0.8 or 0 (both b: one time in four), so the interval runs from 0 to 1; resampling
    the five images would put all five on b once in 3,125 draws, and the low end near 0.4."""
    rows = pd.DataFrame(
        {
            "image": list("vwxyz"),
            "patient_id": ["a"] * 4 + ["b"],
            "label": "p",
            "method": "gradcam",
            "pointing_hit": [1.0, 1.0, 1.0, 1.0, 0.0],
        }
    )
    found = summarise_localisation(rows)["gradcam"].scores["pointing_hit"]
    assert (found.mean, found.low, found.high) == (0.8, 0.0, 1.0)
    alone = summarise_localisation(rows.assign(patient_id=list("vwxyz")))
    assert alone["gradcam"].scores["pointing_hit"].low > 0.2


def test_randomisation_really_changes_the_chosen_layers_only() -> None:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, name="c2")(x)
    model = keras.Model(
        inputs, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    )
    assert weighted_layers_top_down(model) == ["logits", "c2", "c1"]
    copy = randomised_copy(model, {"logits", "c2"}, seed=1)
    for name in ("logits", "c2"):
        assert not np.allclose(
            copy.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0]
        )
    np.testing.assert_array_equal(
        copy.get_layer("c1").get_weights()[0], model.get_layer("c1").get_weights()[0]
    )


def test_cascade_stages_equal_a_fresh_probe_on_each_randomised_copy() -> None:
    """The cascade reloads weights into one probe (no retracing); each stage must equal a new probe
    on that stage's copy, for every method of one run."""
    from cxr.audit.sanity import Cascade

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(x)
    model = keras.Model(
        inputs, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    )
    images = np.random.default_rng(2).uniform(0, 1, (5, 12, 12, 1)).astype("float32")
    targets = np.array([0, 1, 0, 1, 1])
    rows = Cascade(model, "c2").run(images, targets, METHODS, max_stages=3, seed=7)
    assert [(r["method"], r["stage"]) for r in rows] == [(m, s) for m in METHODS for s in (1, 2, 3)]
    for method in METHODS:
        check_stages([r for r in rows if r["method"] == method], model, images, targets, method)


METHODS = ("gradcam", "guided_backprop")


def check_stages(rows: list[dict], model, images, targets, method: str) -> None:
    """Each stage against a new probe on that stage's randomised copy."""
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe

    trained = explain_batch(make_probe(model, "c2"), images, targets, method).maps
    order = weighted_layers_top_down(model)
    for stage, row in enumerate(rows, start=1):
        copy = randomised_copy(model, set(order[:stage]), 7 + stage)
        maps = explain_batch(make_probe(copy, "c2"), images, targets, method).maps
        expected = np.mean([rank_correlation(a, b) for a, b in zip(trained, maps, strict=True)])
        assert row["spearman"] == pytest.approx(expected, abs=1e-6), stage


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The reference: scipy's Spearman's rho of two maps, 0 when either is constant."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def test_audit_on_a_trained_fold(trained_run, capsys) -> None:
    from cxr.cli.present import print_audit

    result = audit_fold(trained_run, 1, ["gradcam", "hirescam"], sanity_stages=3)
    for name in (
        "road.csv",
        "localisation.csv",
        "sanity.csv",
        "summary.json",
        "shortcuts.csv",
        "faithfulness.csv",
        "faithfulness.png",
        "methods.csv",
        "methods.png",
    ):
        assert (result.folder / name).is_file()
    assert set(result.rows["localisation"]["method"]) == {"gradcam", "hirescam", "random", "centre"}
    positives = result.rows["localisation"][result.rows["localisation"]["method"] == "gradcam"]
    # only images with boxes
    assert (positives["label"] == "pneumonia").all() and len(positives) > 0
    assert result.rows["sanity"].groupby("method").size().to_dict() == {"gradcam": 3, "hirescam": 3}
    assert result.summary.best_method in (None, "gradcam", "hirescam")
    assert result.summary.shortcuts.images == len(pd.read_csv(result.folder / "shortcuts.csv")) > 0
    table = pd.read_csv(result.folder / "methods.csv", index_col="method")
    assert set(table.index) == {"gradcam", "hirescam", "random", "centre"}
    gradcam = result.summary.localisation["gradcam"].scores["pointing_hit"]
    assert table.loc["gradcam", "pointing_game"] == gradcam.mean
    saved = json.loads((result.folder / "summary.json").read_text())
    assert saved["localisation"]["gradcam"]["scores"]["pointing_hit"]["mean"] == gradcam.mean
    assert saved["best_method_by_pointing_game"] == result.summary.best_method
    # deletion / insertion and ROAD beside the baselines, in summary.json, methods.csv and the
    # printed table
    faithful = pd.read_csv(result.folder / "faithfulness.csv")
    assert set(faithful["method"]) == {"gradcam", "hirescam", "random", "centre"}
    assert table.loc["centre", "deletion_auc"] == pytest.approx(
        faithful.query("method == 'centre'")["deletion_auc"].mean()
    )
    road = pd.read_csv(result.folder / "road.csv")
    assert set(road["method"]) == {"gradcam", "hirescam", "random", "centre"}
    assert len(road) == 4 * 5 * len(result.summary.sample)
    for method in ("gradcam", "random"):
        found = result.summary.road[method]
        part = road[road["method"] == method]
        assert found.morf == pytest.approx(part["morf"].mean())
        assert saved["road"][method]["gap"] == pytest.approx(found.lerf - found.morf)
        assert table.loc[method, "road_gap"] == pytest.approx(found.gap)
    print_audit(result.summary, result.folder)
    printed = capsys.readouterr().out
    assert all(f"{m}: ROAD" in printed for m in ("gradcam", "hirescam", "random", "centre"))
    # every score of the catalog: its rows written, a record per method in summary.json, its
    # line printed and its columns in methods.csv, each holding the record's value
    from cxr.audit.parts import SCORES

    for part in SCORES:
        written = pd.read_csv(result.folder / part.file)
        assert len(written) == len(result.rows[part.name]) > 0, part.name
        records = result.summary.scores()[part.name]
        assert set(records) == set(saved[part.name]) == set(written["method"]), part.name
        for method, record in records.items():
            assert record.line(method, None) in printed, part.name
            for column, value in record.columns().items():
                assert table.loc[method, column] == pytest.approx(value, nan_ok=True), column


def test_shortcut_region_share_and_flags() -> None:
    import pandas as pd

    from cxr.audit.shortcut import allowed_region, summarise_shortcuts
    from cxr.explain.report import outside_share

    lungs = [Box(10, 10, 5, 20), Box(25, 10, 5, 20)]
    region = allowed_region((40, 40), lungs)
    assert region.sum() == 2 * 5 * 20
    border = allowed_region((40, 40), [])
    assert border.sum() == 32 * 32 and not border[:4].any() and not border[:, -4:].any()
    heatmap = np.zeros((40, 40))
    heatmap[12, 12] = 1.0  # inside a lung
    heatmap[1, 1] = 3.0  # a corner marker
    assert outside_share(heatmap, region) == pytest.approx(0.75)
    assert np.isnan(outside_share(np.zeros((40, 40)), region))
    rows = pd.DataFrame(
        {
            "predicted_class": ["pos"] * 4 + ["neg"] * 6,
            "outside_share": [0.8, 0.7, 0.1, 0.2] + [0.1] * 6,
        }
    )
    rows["flagged"] = rows["outside_share"] > 0.5
    summary = summarise_shortcuts(rows, "gradcam")
    assert summary.per_class["pos"].flagged_share == 0.5 and summary.flagged_classes == ["pos"]
    assert summary.model_flagged and summary.rule == "border band" and summary.regions is None
    assert not summarise_shortcuts(rows.assign(flagged=False), "gradcam").model_flagged


def mean_pooling_toy():
    """Mean pooling then logits (2m, -2m): the class-0 probability is p(m) = 1 / (1 + exp(-4m)) for
    the image mean m."""
    inputs = keras.Input((2, 2, 1))
    model = keras.Model(
        inputs, keras.layers.Dense(2, use_bias=False)(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    model.layers[-1].set_weights([np.array([[2.0, -2.0]])])
    image = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    saliency = np.array([[0.1, 0.4], [0.3, 0.2]]).reshape(1, 2, 2)  # order: 2, 3, 4, 1
    return model, image, saliency, lambda m: 1 / (1 + np.exp(-4 * m))


def test_deletion_and_insertion_curves_by_hand() -> None:
    from cxr.audit.faithfulness import curve_area, perturbation_curves

    model, image, saliency, p = mean_pooling_toy()
    deletion, insertion = perturbation_curves(model, image, saliency, np.array([0]), steps=4)
    np.testing.assert_allclose(deletion[0], [p(2.5), p(2.0), p(1.25), p(0.25), p(0.0)], rtol=1e-6)
    np.testing.assert_allclose(insertion[0], [p(0.0), p(0.5), p(1.25), p(2.25), p(2.5)], rtol=1e-6)
    expected = np.trapezoid([p(2.5), p(2.0), p(1.25), p(0.25), p(0.0)], dx=0.25)
    assert curve_area(deletion)[0] == pytest.approx(expected)


def test_several_maps_share_forward_passes_and_give_each_maps_own_curves() -> None:
    """curves_of_maps (#27) on a mean-pooling model whose class-0 probability has a closed form:
    each map's curves equal that formula applied to the image with its own ranking's pixels
    changed (computed here by hand), two maps that rank alike give the same curves, and the
    model sees each distinct image once per step (first and last steps: one per image)."""
    from cxr.audit.faithfulness import curves_of_maps

    size, steps = 6, 4
    inputs = keras.Input((size, size, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False)(pooled))
    model.layers[-1].set_weights([np.array([[2.0, -2.0]])])
    seen: list[int] = []
    predict = model.predict_on_batch
    model.predict_on_batch = lambda x: seen.append(len(x)) or predict(x)
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (3, size, size, 1))
    canvas = rng.uniform(-1, 1, images.shape)
    a = rng.uniform(size=(3, size, size))
    maps = {"a": a, "a_scaled": 3 * a + 1, "b": rng.uniform(size=(3, size, size))}
    curves = curves_of_maps(model, images, maps, np.zeros(3, int), steps, 4, canvas)
    p = lambda m: 1 / (1 + np.exp(-4 * m))  # noqa: E731
    for name, heatmaps in maps.items():
        for i in range(3):
            order = np.argsort(-heatmaps[i].ravel(), kind="stable")
            for k in range(steps + 1):
                changed = np.zeros(size * size, bool)
                changed[order[: round(k * size * size / steps)]] = True
                changed = changed.reshape(size, size, 1)
                deleted = np.where(changed, canvas[i], images[i]).mean()
                inserted = np.where(changed, images[i], canvas[i]).mean()
                assert curves[name][0][i, k] == pytest.approx(p(deleted), abs=1e-6)
                assert curves[name][1][i, k] == pytest.approx(p(inserted), abs=1e-6)
    np.testing.assert_array_equal(curves["a"][0], curves["a_scaled"][0])
    # distinct images per step: 3 at the ends, 6 (a's and b's) between; deleted and inserted each
    assert sum(seen) == 2 * (3 + 3 * 6 + 3)


def test_a_multi_label_model_is_scored_by_the_findings_own_sigmoid() -> None:
    """Read as multi-label, the same toy's finding 0 has probability 1 / (1 + exp(-2m)), its own
    logit's sigmoid, not the softmax against finding 1, in the curves and in the map metrics'
    target probabilities."""
    from cxr.audit.faithfulness import perturbation_curves
    from cxr.audit.mapmetrics import target_probabilities

    model, image, saliency, _ = mean_pooling_toy()
    q = lambda m: 1 / (1 + np.exp(-2 * m))  # noqa: E731
    deletion, insertion = perturbation_curves(
        model, image, saliency, np.array([0]), steps=4, multi_label=True
    )
    np.testing.assert_allclose(deletion[0], [q(2.5), q(2.0), q(1.25), q(0.25), q(0.0)], rtol=1e-6)
    np.testing.assert_allclose(insertion[0], [q(0.0), q(0.5), q(1.25), q(2.25), q(2.5)], rtol=1e-6)
    both = np.concatenate([image, -image])  # means 2.5 and -2.5; finding 1's logit is -2m
    found = target_probabilities(model, both, np.array([0, 1]), multi_label=True)
    np.testing.assert_allclose(found, [q(2.5), q(2.5)], rtol=1e-6)  # sigmoid(5) both
    softmax = target_probabilities(model, both, np.array([0, 1]))
    np.testing.assert_allclose(softmax, [1 / (1 + np.exp(-10)), 1 / (1 + np.exp(-10))], rtol=1e-6)


def test_curves_with_another_baseline_by_hand() -> None:
    """The same mean-pooling model with removed pixels set to a baseline of 1.0: the curves follow
    the new means."""
    from cxr.audit.faithfulness import perturbation_curves

    model, image, saliency, p = mean_pooling_toy()
    deletion, insertion = perturbation_curves(
        model, image, saliency, np.array([0]), steps=4, baseline=np.ones_like(image)
    )
    np.testing.assert_allclose(deletion[0], [p(2.5), p(2.25), p(1.75), p(1.0), p(1.0)], rtol=1e-6)
    np.testing.assert_allclose(insertion[0], [p(1.0), p(1.25), p(1.75), p(2.5), p(2.5)], rtol=1e-6)


def test_blurred_baseline_keeps_the_mean_and_drops_the_detail() -> None:
    from cxr.audit.faithfulness import baseline_images

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 1))
    blurred = baseline_images(images, "blur")
    assert blurred.shape == images.shape
    # reflect: no dark border
    np.testing.assert_allclose(blurred.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), rtol=1e-3)
    sigma = 5 * 64 / 224  # RISE's 5 px at 224 px, scaled
    # a 2-D Gaussian of sigma shrinks white noise's std by this factor
    expected = 1 / (2 * np.sqrt(np.pi) * sigma)
    assert (blurred - blurred.mean()).std() / (images - images.mean()).std() == pytest.approx(
        expected, rel=0.15
    )
    assert not np.shares_memory(blurred, images) and (baseline_images(images, "black") == 0).all()
    with pytest.raises(CxrError, match="faithfulness baseline 'grey': use black or blur"):
        baseline_images(images, "grey")


def test_audit_command_on_all_trained_folds(trained_run, tmp_path) -> None:
    from typer.testing import CliRunner

    from cxr.cli import app
    from cxr.config import dump_config

    config = tmp_path / "c.yaml"
    config.write_text(dump_config(trained_run))
    options = ["--all-folds", "--methods", "gradcam", "--stages", "1", "--baseline", "blur"]
    sizes = ["audit.sample=6", "audit.intervention_images=3"]  # analysis settings
    result = CliRunner().invoke(app, ["audit", "--config", str(config), *options, *sizes])
    assert result.exit_code == 0, result.output
    assert (
        "== fold 0" in result.output
        and "== fold 1" in result.output
        and "pointing game" in result.output
    )
    assert "== pooled over folds 0, 1" in result.output and "(blur baseline, " in result.output
    # the pooled figures against the per-fold files: every boxed image of both folds, every fold's
    # sanity verdict
    audit = trained_run.experiment.output_dir / trained_run.experiment.name / "audit"
    pooled = json.loads((audit / "summary.json").read_text())
    per_fold = [pd.read_csv(audit / f"fold{k}" / "localisation.csv") for k in (0, 1)]
    hits = pd.concat(per_fold).query("method == 'gradcam'")["pointing_hit"]
    assert (
        pooled["localisation"]["gradcam"]["images"]
        == len(hits)
        == sum((f["method"] == "gradcam").sum() for f in per_fold)
    )
    pointing = pooled["localisation"]["gradcam"]["scores"]["pointing_hit"]
    assert pointing["mean"] == pytest.approx(hits.mean())
    verdicts = [
        json.loads((audit / f"fold{k}" / "summary.json").read_text())["sanity"]["gradcam"]["passes"]
        for k in (0, 1)
    ]
    assert pooled["sanity"]["gradcam"]["folds_passing"] == sum(verdicts) and pooled["sanity"][
        "gradcam"
    ]["passes"] == all(verdicts)
    faithful = pd.concat([pd.read_csv(audit / f"fold{k}" / "faithfulness.csv") for k in (0, 1)])
    assert pooled["faithfulness"]["gradcam"]["deletion_auc"] == pytest.approx(
        faithful.query("method == 'gradcam'")["deletion_auc"].mean()
    )
    assert set(pooled["faithfulness"]) == {"gradcam", "random", "centre"}
    # audit.sample images in the sample, audit.intervention_images per true class filled in turn
    assert faithful.groupby("method")["image"].nunique().eq(2 * 6).all()
    for k in (0, 1):
        filled = pd.read_csv(audit / f"fold{k}" / "interventions.csv")
        assert filled["image"].nunique() == 2 * 3  # two classes
    by_fold = pd.read_csv(audit / "methods_by_fold.csv")
    assert sorted(by_fold["fold"].unique()) == [0, 1] and (audit / "methods.csv").is_file()
    bad = CliRunner().invoke(app, ["audit", "--config", str(config), "--fold", "3"])
    assert bad.exit_code == 1 and "never trained" in bad.output
    empty = CliRunner().invoke(
        app, ["audit", "--config", str(config), "--fold", "0", "--methods", " , "]
    )
    assert (
        empty.exit_code == 2
        and "no explanation method to audit" in empty.output
        and "Traceback" not in empty.output
    )
    wrong = CliRunner().invoke(
        app, ["audit", "--config", str(config), "--fold", "0", "--baseline", "grey"]
    )
    assert (
        wrong.exit_code == 2 and "faithfulness baseline 'grey': use black or blur" in wrong.output
    )


def test_ranked_correlation_is_spearmans_rho() -> None:
    from scipy.stats import spearmanr

    from cxr.stats import ranked, ranked_correlation

    rng = np.random.default_rng(4)
    a, b = rng.uniform(size=(9, 7)), np.round(rng.uniform(size=(9, 7)), 1)  # b has ties
    expected = spearmanr(a.ravel(), b.ravel()).statistic
    assert ranked_correlation(ranked(a), ranked(b)) == pytest.approx(expected, abs=1e-12)
    assert ranked_correlation(ranked(a), ranked(np.ones((9, 7)))) == 0.0


def test_a_best_method_must_beat_both_baselines() -> None:
    from cxr.results.audit import AuditSummary, Estimate, Localisation, Shortcuts

    def summary(**pointing: float) -> AuditSummary:
        scores = {
            m: Localisation(10, {"pointing_hit": Estimate(v, v, v)}) for m, v in pointing.items()
        }
        shortcuts = Shortcuts("gradcam", "border band", 0, 0.0, 0.0, {}, [])
        return AuditSummary(0, [0], "features", scores, {}, {}, shortcuts)

    assert summary(gradcam=0.8, hirescam=0.6, random=0.1, centre=0.5).best_method == "gradcam"
    assert summary(gradcam=0.4, hirescam=0.3, random=0.1, centre=0.5).best_method is None
    assert summary(gradcam=0.5, random=0.1, centre=0.5).best_method is None  # a tie is no win
    assert summary().best_method is None
    assert (
        summary(gradcam=0.4, random=0.1, centre=0.5).to_json()["best_method_by_pointing_game"]
        is None
    )


def test_map_metrics_by_hand() -> None:
    from cxr.audit.mapmetrics import gini, normalised_entropy, summarise_map_metrics

    assert gini(np.array([0.0, 0.0, 0.0, 1.0])) == pytest.approx(0.75)
    assert gini(np.ones((4, 4))) == pytest.approx(0.0) and gini(np.zeros(3)) == 0.0
    assert normalised_entropy(np.ones((4, 4))) == pytest.approx(1.0)
    assert normalised_entropy(np.array([0.0, 0.0, 1.0, 0.0])) == pytest.approx(0.0)
    rows = pd.DataFrame(
        {
            "image": ["a", "b"],
            "method": ["gradcam"] * 2,
            "probability": [0.8, 0.5],
            "probability_on_map": [0.4, 0.6],
            "sparseness": [0.2, 0.4],
            "complexity": [0.9, 0.7],
            "random_logit_spearman": [0.1, 0.3],
            "max_sensitivity": [0.5, 0.7],
        }
    )
    found = summarise_map_metrics(rows)["gradcam"]
    # drops: (0.8 - 0.4) / 0.8 = 50%, and none for b; b's confidence increased
    assert found.average_drop == pytest.approx(25.0) and found.increase_in_confidence == 50.0
    assert found.sparseness == pytest.approx(0.3) and found.random_logit_spearman == 0.2


def test_random_logit_test_tells_a_class_map_from_a_class_blind_one() -> None:
    """EigenCAM ignores the class (rank correlation 1 with another class's map); Grad-CAM of
    another class differs."""
    from cxr.audit.mapmetrics import map_metric_rows
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    probe = make_probe(model, "features")
    images = np.random.default_rng(3).uniform(0, 1, (4, 16, 16, 1)).astype("float32")
    targets = np.array([0, 1, 2, 0])
    maps = {m: explain_batch(probe, images, targets, m).maps for m in ("gradcam", "eigencam")}
    rows = map_metric_rows(model, probe, images, targets, maps, list("abcd"), 3)
    by_method = rows.groupby("method")["random_logit_spearman"].mean()
    assert by_method["eigencam"] == pytest.approx(1.0) and by_method["gradcam"] < 0.9
    assert np.isnan(by_method["random"]) and set(rows["method"]) == {
        "gradcam",
        "eigencam",
        "random",
        "centre",
    }
    # the probability on the image times its map, against the model run on that product
    logits = model.predict(images * maps["gradcam"][..., None], verbose=0)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    on_map = rows.query("method == 'gradcam'")["probability_on_map"].to_numpy()
    np.testing.assert_allclose(on_map, probs[np.arange(4), targets], rtol=1e-5)


def test_max_sensitivity_is_zero_for_a_map_noise_cannot_move() -> None:
    """Saliency of a linear model is its weights, whatever the image: sensitivity 0; Grad-CAM of
    a ReLU network moves with the noise."""
    from cxr.audit.mapmetrics import max_sensitivity
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe

    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 1))
    spatial = keras.layers.Identity(name="features")(inputs)
    linear = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(spatial)))
    images = np.random.default_rng(4).uniform(0, 255, (3, 8, 8, 1)).astype("float32")
    targets = np.array([0, 1, 0])
    probe = make_probe(linear, "features")
    maps = explain_batch(probe, images, targets, "saliency").maps
    found = max_sensitivity(probe, images, targets, {"saliency": maps}, 0)["saliency"]
    np.testing.assert_allclose(found, 0)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(inputs)
    relu = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    relu_probe = make_probe(relu, "c")
    relu_maps = explain_batch(relu_probe, images, targets, "gradcam").maps
    found = max_sensitivity(relu_probe, images, targets, {"gradcam": relu_maps}, 0)["gradcam"]
    assert (found > 0).all()


def test_the_audit_names_only_the_figures_it_wrote(tmp_path, capsys) -> None:
    from cxr.cli.present import print_audit
    from cxr.results.audit import AuditSummary, Shortcuts

    shortcuts = Shortcuts("gradcam", "border band", 0, 0.0, 0.0, {}, [])
    summary = AuditSummary(0, [0], "features", {}, {}, {}, shortcuts)
    print_audit(summary, tmp_path)  # no image had a box: no methods.png
    assert capsys.readouterr().out.strip().endswith("(methods side by side: methods.csv)")
    (tmp_path / "methods.png").write_bytes(b"")
    print_audit(summary, tmp_path)
    assert "methods.csv, methods.png)" in capsys.readouterr().out
