"""data.crop: lungs: the crop's geometry against hand computations, the pipeline against a plain
slice of the film, and a cropped model's maps drawn back onto the whole film where the crop's
geometry puts them."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from PIL import Image

from cxr.data.labels import decode_boxes, read_labels
from cxr.data.lungfields import CropBox, crop_box, to_input
from cxr.data.regions import REGIONS, region_codes
from cxr.explain.overlay import place_map
from cxr.explain.report import peak_location


def test_the_crop_box_is_the_lungs_bounding_box_widened_and_clipped_by_hand() -> None:
    lungs = np.zeros((64, 80), dtype=bool)
    lungs[10:30, 12:20] = True
    lungs[12:28, 40:50] = True
    # margin 0.1: 6 rows (6.4) and 8 columns; rows 10..29 -> 4..35, columns 12..49 -> 4..57
    assert crop_box(lungs, 0.1) == CropBox(top=4, left=4, height=32, width=54)
    assert crop_box(lungs, 0.0) == CropBox(10, 12, 20, 38)
    # margin 0.4: 26 rows and 32 columns, clipped to the film: rows 10 - 26 < 0 and 30 + 26 = 56;
    # columns 12 - 32 < 0 and 50 + 32 > 80
    assert crop_box(lungs, 0.4) == CropBox(0, 0, 56, 80)
    assert crop_box(np.zeros((8, 9), dtype=bool), 0.1) == CropBox(0, 0, 8, 9)  # no lungs


def test_a_map_peaking_at_one_pixel_of_the_crop_lands_on_the_pixel_the_geometry_gives() -> None:
    # an 8 x 8 map of a crop of 24 rows x 40 columns at (10, 20) of a 64 x 96 film: each map
    # pixel covers 3 rows and 5 columns of the film, so pixel (2, 5)'s centre is film row
    # 10 + 3 * 2 + 1 = 17 and column 20 + 5 * 5 + 2 = 47
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[2, 5] = 1.0
    placed = place_map(heatmap, CropBox(10, 20, 24, 40), (64, 96))
    assert placed.shape == (64, 96)
    assert peak_location(placed) == (47, 17)  # (x, y)
    assert placed[17, 47] == pytest.approx(1.0)
    outside = np.ones((64, 96), dtype=bool)
    outside[10:34, 20:60] = False
    assert placed[outside].max() == 0.0  # nothing where the model saw nothing
    # without a crop the map covers the whole film: pixel (2, 5) -> row 8 * 2 + 3.5, column 12 * 5
    # + 5.5: the peak is one of the two middle pixels of its 8 x 12 block
    x, y = peak_location(place_map(heatmap, None, (64, 96)))
    assert y in (19, 20) and x in (65, 66)


def test_film_regions_go_to_the_input_cropped_and_resized_by_nearest_neighbour() -> None:
    codes = np.arange(16 * 16, dtype=np.int16).reshape(16, 16)
    box = CropBox(4, 2, 8, 12)  # rows 4..11, columns 2..13
    small = to_input(codes, box, 4)
    # nearest neighbour from 8 x 12 to 4 x 4: input pixel (i, j) is film pixel
    # (4 + 2 i + 1, 2 + 3 j + 1) (PIL samples each output pixel's centre)
    expected = np.array(
        [[(4 + 2 * i + 1) * 16 + 2 + 3 * j + 1 for j in range(4)] for i in range(4)]
    )
    np.testing.assert_array_equal(small, expected)
    assert small.dtype == codes.dtype
    same = to_input(codes.astype(np.int8) % 11, CropBox(0, 0, 16, 16), 16)
    np.testing.assert_array_equal(same, codes.astype(np.int8) % 11)


def write_film(folder, name: str, pixels: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / "images" / name)


def test_the_pipeline_shows_the_model_the_crop_and_nothing_else(tmp_path) -> None:
    from cxr.data.pipeline import make_dataset

    rng = np.random.default_rng(0)
    films = [rng.integers(0, 256, size=(48, 40), dtype=np.uint8) for _ in range(3)]
    lungs = [
        '[{"x": 8, "y": 10, "w": 6, "h": 16, "label": "lung"},'
        ' {"x": 20, "y": 12, "w": 6, "h": 14, "label": "lung"}]',
        '[{"x": 4, "y": 20, "w": 16, "h": 16, "label": "lung"}]',
        "[]",  # no lung fields: the whole film
    ]
    for i, film in enumerate(films):
        write_film(tmp_path, f"{i}.png", film)
    table = pd.DataFrame(
        {
            "image": [f"images/{i}.png" for i in range(3)],
            "label": ["a", "b", "a"],
            "width": 40,
            "height": 48,
            "lungs": lungs,
        }
    )
    seen = np.concatenate(
        [
            x.numpy()[..., 0]
            for x, _ in make_dataset(
                tmp_path, table, ["a", "b"], image_size=16, crop="lungs", crop_margin=0.0
            )
        ]
    )
    # by hand: film 0's lungs span rows 10..25 and columns 8..25 (16 x 18, resized to 16 x 16);
    # film 1's rows 20..35, columns 4..19: exactly 16 x 16, so the model sees those very pixels
    np.testing.assert_array_equal(seen[1], films[1][20:36, 4:20].astype(np.float32))
    import tensorflow as tf

    resized = tf.image.resize(
        films[0][10:26, 8:26, None].astype(np.float32), (16, 16), antialias=True
    )
    np.testing.assert_allclose(seen[0], resized.numpy()[..., 0], atol=1e-3)
    whole = tf.image.resize(films[2][..., None].astype(np.float32), (16, 16), antialias=True)
    np.testing.assert_allclose(seen[2], whole.numpy()[..., 0], atol=1e-3)
    # with data.outside_lungs=fill too: only film 1's lung pixels, in the crop, stay
    filled = next(
        iter(
            make_dataset(
                tmp_path,
                table.iloc[[1]],
                ["a", "b"],
                image_size=16,
                crop="lungs",
                crop_margin=0.0,
                outside_lungs="fill",
            )
        )
    )[0].numpy()[0, ..., 0]
    np.testing.assert_array_equal(filled, seen[1])  # the lungs fill the whole crop


def hand_box(row: pd.Series, size: int, margin: float) -> CropBox:
    """The crop box from labels.csv's lung boxes: their bounding box, widened, clipped."""
    boxes = decode_boxes(row["lungs"])
    top = min(b.y for b in boxes)
    left = min(b.x for b in boxes)
    bottom = max(b.y + b.h for b in boxes)
    right = max(b.x + b.w for b in boxes)
    pad = round(margin * size)
    top, left = max(int(np.floor(top)) - pad, 0), max(int(np.floor(left)) - pad, 0)
    bottom = min(int(np.ceil(bottom)) + pad, size)
    right = min(int(np.ceil(right)) + pad, size)
    return CropBox(top, left, bottom - top, right - left)


def test_a_cropped_models_maps_are_drawn_back_onto_the_whole_film(
    synthetic_dataset, tmp_path
) -> None:
    """Trained with data.crop=lungs: explain's peaks land in the part of the film the model saw,
    where the crop's geometry puts its map's peak; the film beside the overlay is the whole stored
    film; the setting is the run's (an override is refused); the audit's regions are the film's."""
    from typer.testing import CliRunner

    from cxr.audit.run import intervention_sample
    from cxr.cli import app
    from cxr.explain.options import ExplainOptions
    from cxr.explain.run import explain_fold
    from cxr.train import train_folds
    from cxr.trained import TrainedFold

    cfg = tiny_config(synthetic_dataset, tmp_path / "runs", "data.crop=lungs")
    train_folds(cfg, [0])
    result = explain_fold(cfg, 0, ExplainOptions(save_maps=True))
    labels = read_labels(synthetic_dataset).set_index("image")
    with zipfile.ZipFile(result.folder / "maps.npz") as maps:
        for row in result.report.to_dict("records"):
            box = hand_box(labels.loc[row["image"]], 64, 0.05)
            assert box.height < 64 or box.width < 64  # a real crop
            with maps.open(f"{row['image']}/upsampled.npy") as handle:
                seen = np.lib.format.read_array(handle)
            # the film's peak, taken back through the crop's geometry, is at the map's peak (the
            # maps are smooth: within 2% of it); a plain resize to the whole film is not
            y, x = row["peak_y"], row["peak_x"]
            assert box.top <= y < box.top + box.height and box.left <= x < box.left + box.width
            i = int((y - box.top + 0.5) * 64 / box.height)
            j = int((x - box.left + 0.5) * 64 / box.width)
            assert seen[i, j] >= 0.98 * seen.max(), row["image"]
            film = np.asarray(Image.open(result.folder / row["film"]).convert("L"), dtype=float)
            stored = np.asarray(Image.open(synthetic_dataset / row["image"]), dtype=float)
            assert film.shape == stored.shape and np.abs(film - stored).mean() < 3  # JPEG
            # the overlay is the plain film outside the crop (the model saw nothing there), and
            # coloured inside it
            overlay = np.asarray(Image.open(result.folder / row["overlay"]), dtype=float)
            inside = np.zeros(stored.shape, dtype=bool)
            inside[box.top : box.top + box.height, box.left : box.left + box.width] = True
            grey_outside = np.abs(overlay[~inside] - stored[~inside][:, None]).mean()
            colour_inside = np.abs(overlay[inside] - overlay[inside].mean(axis=-1, keepdims=True))
            assert grey_outside < 3 and colour_inside.mean() > 10, row["image"]
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["right"] + summary["wrong"] == len(result.report)

    # the audit's regions as the model sees them: the film's, cropped and resized
    trained = TrainedFold.open(cfg, 0)
    images, codes, names, _ = intervention_sample(trained, trained.table(), per_class=2)
    for image, code in zip(names, codes, strict=True):
        box = hand_box(labels.loc[image], 64, 0.05)
        film = region_codes(lung_mask(labels.loc[image]))
        # input pixel (i, j) samples film pixel (top + (i + 0.5) h / 64, left + (j + 0.5) w / 64)
        for i, j in ((0, 0), (10, 40), (63, 63), (32, 5)):
            fy = int(box.top + (i + 0.5) * box.height / 64)
            fx = int(box.left + (j + 0.5) * box.width / 64)
            assert code[i, j] == film[fy, fx], (image, i, j)
        assert REGIONS.index("lung") in code
    assert images.shape[1:3] == (64, 64)

    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"experiment: {{name: tiny, output_dir: {tmp_path / 'runs'}}}\n"
        f"data: {{root: {synthetic_dataset.parent}, dataset: {synthetic_dataset.name}}}\n"
    )
    refused = CliRunner().invoke(app, ["evaluate", "--config", str(config), "data.crop=none"])
    assert refused.exit_code == 2 and "data.crop" in refused.output
    # another hospital's films as they come, without lung fields: computed for them first
    bare = tmp_path / "elsewhere" / "bare"
    shutil.copytree(synthetic_dataset, bare)
    read_labels(bare).drop(columns=["lungs"]).head(12).to_csv(bare / "labels.csv", index=False)
    done = CliRunner().invoke(app, ["evaluate", "--config", str(config), "--on", str(bare)])
    assert done.exit_code == 0, done.output
    assert "ROC AUC" in done.output and read_labels(bare)["lung_mask"].ne("").all()


def lung_mask(row: pd.Series) -> np.ndarray:
    mask = np.zeros((64, 64), dtype=bool)
    for b in decode_boxes(row["lungs"]):
        mask[int(b.y) : int(np.ceil(b.y + b.h)), int(b.x) : int(np.ceil(b.x + b.w))] = True
    return mask


def test_a_dataset_without_lung_fields_is_refused_naming_the_setting(tmp_path) -> None:
    from cxr.data.pipeline import make_dataset
    from cxr.errors import DataError

    write_film(tmp_path, "0.png", np.zeros((16, 16), dtype=np.uint8))
    table = pd.DataFrame({"image": ["images/0.png"], "label": ["a"], "width": 16, "height": 16})
    with pytest.raises(DataError, match=r"has no lung fields and data\.crop needs them: run `cxr"):
        make_dataset(tmp_path, table, ["a"], image_size=16, crop="lungs")


def test_a_labels_table_whose_sizes_are_not_the_files_is_one_line(tmp_path) -> None:
    """A crop box is computed in labels.csv's pixels and applied to the decoded file: a table
    that misstates a film's size is refused by name, not a TensorFlow assertion mid-run."""
    from cxr.data.pipeline import make_dataset
    from cxr.errors import DataError

    write_film(tmp_path, "0.png", np.zeros((32, 32), dtype=np.uint8))
    table = pd.DataFrame(
        {
            "image": ["images/0.png"],
            "label": ["a"],
            "width": 64,
            "height": 64,
            "lungs": ['[{"x": 40, "y": 40, "w": 10, "h": 10, "label": "lung"}]'],
        }
    )
    with pytest.raises(DataError, match=r"images/0.png is 32 x 32 px but labels.csv says 64 x 64"):
        make_dataset(tmp_path, table, ["a"], image_size=16, crop="lungs")
