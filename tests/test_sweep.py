"""The audit's one pass over a fold, against image-by-image computations."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.audit.sweep import OutcomeSample, shortcut_row, sweep_fold


def test_outcome_sample_keeps_the_smallest_keys_and_takes_turns() -> None:
    rng = np.random.default_rng(1)
    groups = {"TP": 10, "TN": 3, "FP": 1}
    sampler = OutcomeSample(5)
    offered = []
    for group, count in groups.items():
        for i in range(count):
            key = float(rng.random())
            name = f"{group}{i}"
            offered.append((group, key, name))
            sampler.offer(group, key, len(offered), (name, np.zeros(1), 0, {"m": np.zeros(1)}, {}))
    ranked = {g: [n for _, n in sorted((k, n) for h, k, n in offered if h == g)] for g in groups}
    # groups in name order (FP, TN, TP), one each in turn, the smallest keys first
    expected = [ranked["FP"][0], ranked["TN"][0], ranked["TP"][0], ranked["TN"][1], ranked["TP"][1]]
    sample = sampler.taking_turns()
    assert sample.names == expected and len(sample.maps["m"]) == 5


def test_one_pass_reads_the_fold_once_and_matches_each_image_alone(
    trained_run, monkeypatch
) -> None:
    import cxr.data.pipeline as pipeline
    from cxr.audit.localisation import localisation_scores
    from cxr.catalogs.models import get_model_spec
    from cxr.data.labels import decode_boxes
    from cxr.data.lungfields import lung_region, stored_size
    from cxr.explain.methods import explain_batch
    from cxr.explain.overlay import resize_map
    from cxr.explain.probe import make_probe
    from cxr.runs import open_trained_fold

    run = open_trained_fold(trained_run, 1)
    fold_cfg, classes = run.read_config(), run.read_classes()
    table = run.validation_table(fold_cfg)
    model = run.load_model()
    layer = get_model_spec(fold_cfg.model.name).explain_layer
    streamed: list[int] = []
    make_dataset = pipeline.make_dataset

    def counted(dataset_dir, part, *args, **kwargs):
        streamed.append(len(part))
        return make_dataset(dataset_dir, part, *args, **kwargs)

    monkeypatch.setattr(pipeline, "make_dataset", counted)
    seen = sweep_fold(fold_cfg, make_probe(model, layer), table, classes, ["gradcam", "hirescam"])
    assert streamed == [len(table)]  # every image of the fold, once
    monkeypatch.undo()

    # image by image, through a probe of its own, with batches of one
    alone = make_probe(model, layer)
    maps, predicted = {}, {}
    for k, row in enumerate(table.to_dict("records")):
        image = next(iter(pipeline.fold_dataset(fold_cfg, table.iloc[[k]], classes, 1)))[0]
        truth = classes.index(row["label"])
        maps[row["image"]] = explain_batch(alone, image, np.array([truth]), "gradcam").maps[0]
        of_predicted = explain_batch(alone, image, None, "gradcam")
        predicted[row["image"]] = (int(of_predicted.class_index[0]), of_predicted.maps[0])

    # the sample's maps (sanity check, faithfulness) are each image's true-class map
    for name, heatmap in zip(seen.sample.names, seen.sample.maps["gradcam"], strict=True):
        np.testing.assert_allclose(heatmap, maps[name], atol=1e-5)
    # localisation: every boxed image, scored on its own map
    boxed = table[table["boxes"].map(lambda b: len(decode_boxes(b)) > 0)]
    scored = seen.localisation.query("method == 'gradcam'").set_index("image")
    assert sorted(scored.index) == sorted(boxed["image"])
    for row in boxed.to_dict("records"):
        size = stored_size(fold_cfg.data.dataset_dir, row)
        expected = localisation_scores(
            resize_map(maps[row["image"]], *size), decode_boxes(row["boxes"])
        )
        assert scored.loc[row["image"], "pointing_hit"] == expected["pointing_hit"]
    # shortcuts: the predicted class, and its map (explained again only where the model is wrong)
    rows = seen.shortcuts.set_index("image")
    assert len(rows) == len(table)
    for row in table.to_dict("records"):
        index, heatmap = predicted[row["image"]]
        assert rows.loc[row["image"], "predicted_class"] == classes[index]
        size = stored_size(fold_cfg.data.dataset_dir, row)
        lungs = lung_region(fold_cfg.data.dataset_dir, row, size)
        expected = shortcut_row(row, lungs, resize_map(heatmap, *size))
        assert rows.loc[row["image"], "outside_share"] == pytest.approx(
            expected["outside_share"], abs=1e-5
        )
    # the sample is drawn across outcomes: every outcome of the fold is in it
    outcomes = rows["outcome"]
    assert set(outcomes[seen.sample.names]) == set(outcomes) and len(seen.sample.names) == 16
