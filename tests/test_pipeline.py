"""The tf.data pipeline: shapes, channels, labels, flips in training only, fold selection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.data.labels import read_labels
from cxr.data.pipeline import encode_labels, load_split, make_dataset, select_split
from cxr.errors import DataError


def source_images(dataset: Path, table: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(Image.open(dataset / p), dtype=np.float32) for p in table["image"]])


def test_validation_batches_match_the_files_in_order(synthetic_dataset: Path) -> None:
    table, names = load_split(synthetic_dataset, fold=1, split="validation")
    ds = make_dataset(synthetic_dataset, table, names, image_size=64, batch_size=7, training=False)
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (len(table), 64, 64, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], source_images(synthetic_dataset, table), atol=1e-6)
    assert labels.tolist() == [names.index(label) for label in table["label"]]
    # read front to back once: the autotuner's thread is off (it could hold the iterator's end ~2 s)
    assert ds.options().autotune.enabled is False
    training = make_dataset(synthetic_dataset, table, names, image_size=64, training=True)
    assert training.options().autotune.enabled is not False


def test_flips_in_training_only(synthetic_dataset: Path) -> None:
    table, names = load_split(synthetic_dataset, fold=1, split="train")
    originals = source_images(synthetic_dataset, table)
    ds = make_dataset(
        synthetic_dataset, table, names, image_size=64, batch_size=16, training=True, seed=4
    )
    flipped = kept = 0
    for images, _ in ds:
        for image in images.numpy()[..., 0]:
            same = np.abs(originals - image).max(axis=(1, 2)).min() < 1e-6
            mirrored = np.abs(originals[:, :, ::-1] - image).max(axis=(1, 2)).min() < 1e-6
            assert same or mirrored
            flipped += mirrored and not same
            kept += same
    assert flipped > 10 and kept > 10
    no_flip = make_dataset(
        synthetic_dataset, table, names, image_size=64, batch_size=16, training=True, flip=False
    )
    for images, _ in no_flip:
        for image in images.numpy()[..., 0]:
            assert np.abs(originals - image).max(axis=(1, 2)).min() < 1e-6


def test_resize_channels_and_preprocessing(synthetic_dataset: Path) -> None:
    table, names = load_split(synthetic_dataset, fold=0, split="validation")
    ds = make_dataset(
        synthetic_dataset,
        table.head(4),
        names,
        image_size=32,
        channels=3,
        batch_size=4,
        preprocess=lambda x: x - 100.0,
    )
    images, _ = next(iter(ds))
    assert images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(images[..., 0].numpy(), images[..., 2].numpy())
    assert float(images.numpy().min()) >= -100 and float(images.numpy().max()) <= 155
    raw, _ = next(
        iter(make_dataset(synthetic_dataset, table.head(4), names, image_size=32, batch_size=4))
    )
    assert float(raw.numpy().max()) > 100  # pixels stay in [0, 255]: models preprocess themselves


def test_multi_label_encoding() -> None:
    hot = encode_labels(pd.Series(["A|C", "B", "A"]), ["A", "B", "C"], multi_label=True)
    assert hot.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(DataError, match="label\\(s\\) D not among the configured classes A, B, C"):
        encode_labels(pd.Series(["D"]), ["A", "B", "C"])


def test_fold_that_does_not_exist(synthetic_dataset: Path) -> None:
    with pytest.raises(DataError, match=r"fold 7 does not exist; this dataset has folds 0\.\.4"):
        select_split(read_labels(synthetic_dataset), 7, "validation")


def test_split_missing_a_class(synthetic_dataset: Path) -> None:
    with pytest.raises(DataError, match="has no image of class\\(es\\) covid"):
        load_split(synthetic_dataset, 0, "validation", classes=["covid", "normal", "pneumonia"])


def test_cache_file_is_read_back_and_never_stale(tmp_path: Path) -> None:
    """data.cache=<folder>: the first pass writes a cache file; the second reads it, not the PNGs; a
    changed image gets a new one."""
    import shutil

    from cxr.data.sources import DownloadOptions, download

    dataset = download(
        "synthetic",
        DownloadOptions(dest=tmp_path / "data", n=20, size=32, folds=2, show_progress=False),
    )
    table, names = load_split(dataset, fold=0, split="validation")
    originals = source_images(dataset, table)

    def batches() -> np.ndarray:
        ds = make_dataset(
            dataset, table, names, image_size=32, channels=3, batch_size=4, cache=tmp_path / "cache"
        )
        return np.concatenate([x.numpy() for x, _ in ds])

    first = batches()
    # three channels after the cache
    np.testing.assert_allclose(first, np.repeat(originals[..., None], 3, axis=-1), atol=1e-6)
    assert len(list((tmp_path / "cache").glob("*.index"))) == 1

    victim = dataset / table["image"].iloc[0]
    stat = victim.stat()
    shutil.copy(victim, tmp_path / "saved.png")
    # same name, new pixels: the cache must not serve the old ones
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(victim)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = batches()
    assert changed[0].max() == 0 and len(list((tmp_path / "cache").glob("*.index"))) == 2

    shutil.copy(tmp_path / "saved.png", victim)
    # back as it was: the first cache file is valid again
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for image in table[
        "image"
    ]:  # garbage of the same length and time: only the cache can give the pixels now
        path = dataset / image
        times = (path.stat().st_atime_ns, path.stat().st_mtime_ns)
        path.write_bytes(b"x" * path.stat().st_size)
        os.utime(path, ns=times)
    np.testing.assert_array_equal(batches(), first)


def test_cache_folder_that_cannot_be_made(synthetic_dataset: Path, tmp_path: Path) -> None:
    table, names = load_split(synthetic_dataset, fold=0, split="validation")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(
        DataError,
        match=r"data\.cache = '.*file/cache': cannot use it as the cache folder "
        r".*give a writable folder",
    ):
        make_dataset(
            synthetic_dataset, table, names, image_size=64, cache=tmp_path / "file" / "cache"
        )


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_erase_border_fills_one_corner_or_strip_with_the_mean(
    synthetic_dataset: Path, probability: float
) -> None:
    """#25: each erased training image differs from its source in exactly one of the eight areas
    (four 15% corner squares, four 10% border strips, by hand below), filled with the source
    image's mean; about `probability` of them are erased; the validation data never is."""
    table, names = load_split(synthetic_dataset, fold=1, split="train")
    originals = source_images(synthetic_dataset, table)
    c, b = round(0.15 * 64), round(0.10 * 64)
    areas = [np.zeros((64, 64), bool) for _ in range(8)]
    for area, (rows, cols) in zip(
        areas,
        [
            (slice(0, c), slice(0, c)),
            (slice(0, c), slice(64 - c, 64)),
            (slice(64 - c, 64), slice(0, c)),
            (slice(64 - c, 64), slice(64 - c, 64)),
            (slice(0, b), slice(None)),
            (slice(64 - b, 64), slice(None)),
            (slice(None), slice(0, b)),
            (slice(None), slice(64 - b, 64)),
        ],
        strict=True,
    ):
        area[rows, cols] = True
    ds = make_dataset(
        synthetic_dataset,
        table,
        names,
        image_size=64,
        batch_size=16,
        training=True,
        flip=False,
        seed=5,
        erase_border=probability,
    )
    erased, used = 0, set()
    for images, _ in ds:
        for image in images.numpy()[..., 0]:
            gaps = np.abs(originals - image).max(axis=(1, 2))
            source = originals[int(np.argmin(gaps))]  # which film: the rest of it is untouched
            changed = np.abs(source - image) > 1e-4
            if not changed.any():
                continue
            matches = [k for k, area in enumerate(areas) if not (changed & ~area).any()]
            assert matches, "changed pixels outside every corner and strip"
            area = (
                areas[matches[0]]
                if len(matches) == 1
                else areas[min(matches, key=lambda k: areas[k].sum())]
            )
            assert np.allclose(image[area], source.mean(), atol=1e-3)
            erased += 1
            used.add(matches[0])
    share = erased / len(table)
    assert {0.0: share == 0, 0.5: 0.3 < share < 0.7, 1.0: share > 0.95}[probability], share
    if probability == 1.0:
        assert len(used) >= 6  # the areas are drawn at random, not always the same one
    validation, _ = load_split(synthetic_dataset, fold=1, split="validation")
    plain = make_dataset(
        synthetic_dataset, validation, names, image_size=64, training=False, erase_border=1.0
    )
    found = np.concatenate([x.numpy() for x, _ in plain])[..., 0]
    np.testing.assert_allclose(found, source_images(synthetic_dataset, validation), atol=1e-6)
