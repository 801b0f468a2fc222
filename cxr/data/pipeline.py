"""tf.data input pipeline from `labels.csv`: validation = one fold, training = the others.

Images stream from disk (parallel decode, resize, channels, random horizontal
flips for training only, batch, prefetch), so memory does not grow with the
dataset; `cache=True` keeps decoded images in memory for small sets, and
`cache=<folder>` writes them once to a cache file there for sets larger than
memory whose decoding is the bottleneck (large PNGs, DICOM-sized images).
Batches hold pixels in [0, 255]: every cxr model applies its own preprocessing
as its first layers (see cxr.models.build); `preprocess` is for other models.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import tensorflow as tf

from cxr.config import Config
from cxr.data.images import read_image
from cxr.data.labels import LABEL_SEPARATOR, read_labels, split_labels
from cxr.data.labels import class_names as table_class_names
from cxr.data.lungfields import BLUR_SIGMA, lung_inputs
from cxr.data.regions import BORDER, CORNER
from cxr.errors import DataError

log = logging.getLogger(__name__)
Split = Literal["train", "validation"]
Preprocess = Callable[[tf.Tensor], tf.Tensor]


def select_split(table: pd.DataFrame, fold: int, split: Split) -> pd.DataFrame:
    """Rows of the validation fold, or of every other fold for training."""
    folds = sorted(table["fold"].unique())
    if fold not in folds:
        raise DataError(
            f"fold {fold} does not exist; this dataset has folds {folds[0]}..{folds[-1]}"
        )
    mask = table["fold"] == fold
    return table[mask if split == "validation" else ~mask].reset_index(drop=True)


def encode_labels(
    labels: pd.Series, class_names: list[str], multi_label: bool = False
) -> np.ndarray:
    """Class indices (int32, shape (N,)) or multi-hot (float32, shape (N, C)) for multi-label."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(
        {name for label in labels for name in (split_labels(label) if multi_label else [label])}
        - set(index)
    )
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        hint = (
            " (multi-label data? set data.multi_label: true)"
            if any(LABEL_SEPARATOR in u for u in unknown)
            else ""
        )
        raise DataError(
            f"label(s) {shown} not among the configured classes {', '.join(class_names)}{hint}"
        )
    if not multi_label:
        return np.array([index[label] for label in labels], dtype=np.int32)
    hot = np.zeros((len(labels), len(class_names)), dtype=np.float32)
    for row, label in enumerate(labels):
        hot[row, [index[name] for name in split_labels(label)]] = 1.0
    return hot


# The map functions below branch on Python values only: traced as written, without AutoGraph's
# conversion (50 ms of every dataset made).
as_written = tf.autograph.experimental.do_not_convert
# Inference and validation read a table front to back: no autotuner (AUTOTUNE then means
# min(16, cores)). With it, dropping the iterator after the last batch waited ~2 s for the
# autotuner's thread in 3 of 10 `cxr explain` runs of 256 images (0 of 20 without it).
READ_ONCE = tf.data.Options()
READ_ONCE.autotune.enabled = False


def border_areas(size: int) -> np.ndarray:
    """(8, S, S) bool: the four corner squares and the four border strips of a film, as the
    audit's regions draw them (cxr.data.regions: CORNER and BORDER shares of each side)."""
    cy, by = round(CORNER * size), round(BORDER * size)
    areas = np.zeros((8, size, size), dtype=bool)
    areas[0, :cy, :cy], areas[1, :cy, -cy:] = True, True
    areas[2, -cy:, :cy], areas[3, -cy:, -cy:] = True, True
    areas[4, :by], areas[5, -by:], areas[6, :, :by], areas[7, :, -by:] = True, True, True, True
    return areas


SALT = 1_000_003  # erasing draws from other seeds than the flips, which use (seed, position)


def erased(image: tf.Tensor, probability: float, seed: tf.Tensor, areas: tf.Tensor) -> tf.Tensor:
    """With `probability`, one of the film's corners or border strips (`areas`, border_areas;
    which one seeded, stateless) filled with the image's mean: a tag or marker there stops being
    a reliable cue."""
    draws = tf.random.stateless_uniform([2], seed=seed)
    which = tf.cast(draws[1] * 8, tf.int32)
    mask = tf.logical_and(areas[tf.minimum(which, 7)], draws[0] < probability)[..., None]
    return tf.where(mask, tf.reduce_mean(image), image)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of radius round(4 sigma), as scipy.ndimage.gaussian_filter's."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def blurred(image: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """(S, S, 1) image blurred by a separable Gaussian, edges mirrored (scipy's 'reflect')."""
    radius = len(kernel) // 2
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    rows = tf.nn.conv2d(padded, tf.constant(kernel.reshape(-1, 1, 1, 1)), 1, "VALID")
    return tf.nn.conv2d(rows, tf.constant(kernel.reshape(1, -1, 1, 1)), 1, "VALID")[0]


def outside_lungs_op(mode: str, size: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """(image (S, S, 1), spans (S, 2)) -> the image with what lies outside the kept spans
    (cxr.data.lungfields.kept_spans) filled with the image's mean or blurred."""
    columns = tf.range(size)[None, :]
    kernel = gaussian_kernel(BLUR_SIGMA * size)

    def apply(image: tf.Tensor, spans: tf.Tensor) -> tf.Tensor:
        kept = (columns >= spans[:, :1]) & (columns < spans[:, 1:])
        outside = tf.reduce_mean(image) if mode == "fill" else blurred(image, kernel)
        return tf.where(kept[..., None], image, outside)

    return apply


def make_dataset(
    dataset_dir: Path,
    table: pd.DataFrame,
    class_names: list[str],
    *,
    image_size: int,
    channels: int = 1,
    batch_size: int = 16,
    training: bool = False,
    flip: bool = True,
    preprocess: Preprocess | None = None,
    multi_label: bool = False,
    cache: bool | str | Path = False,
    seed: int = 0,
    erase_border: float = 0.0,
    outside_lungs: str = "keep",
    crop: str = "none",
    crop_margin: float = 0.05,
) -> tf.data.Dataset:
    """Batches of (images (B, S, S, channels) float32, labels); flips, border erasing and
    shuffling only when `training`; `crop` (none, lungs) and `outside_lungs` (keep, blur, fill)
    for every read (cxr.data.lungfields).

    `cache`: False streams; True or "memory" keeps decoded images in memory; a folder holds a cache
    file.
    """
    paths = [str(dataset_dir / image) for image in table["image"]]
    labels = encode_labels(table["label"], class_names, multi_label)
    margin = crop_margin if crop == "lungs" else None
    inputs: dict[str, np.ndarray | list[str]] = {"path": paths}
    if margin is not None or outside_lungs != "keep":
        found = lung_inputs(dataset_dir, table, image_size, margin, outside_lungs != "keep")
        if found.unknown:
            log.warning(
                "%d of %d image(s) have no plausible lung fields: data.crop and "
                "data.outside_lungs leave their whole film",
                found.unknown,
                len(table),
            )
        if found.boxes is not None:
            inputs["box"] = found.boxes
        if found.spans is not None:
            inputs["spans"] = found.spans
            around = outside_lungs_op(outside_lungs, image_size)
    ds = tf.data.Dataset.from_tensor_slices((inputs, labels))

    @as_written
    def decode(item: dict, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        box = item.get("box")
        image = decode_image(item["path"], image_size, 1, box)
        if outside_lungs != "keep":
            image = around(image, item["spans"])
        return image, label

    def shuffle(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True) if training else ds

    # cached: decode once, then a fresh order every epoch (shuffling before the cache freezes it)
    if cache is not False:
        place = (
            ""
            if cache is True or cache == "memory"
            else str(
                cache_file(
                    Path(cache), paths, labels, image_size, outside_lungs, margin, inputs.get("box")
                )
            )
        )
        ds = shuffle(ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache(place))
    else:  # shuffle paths, not pixels: the buffer stays small
        ds = shuffle(ds).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if channels > 1:  # after the cache, which holds one grey channel
        ds = ds.map(
            as_written(lambda image, y: (tf.repeat(image, channels, axis=-1), y)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    # stateless flips keyed by (seed, position): the same run gives the same flips, in parallel too
    if training and flip:
        ds = ds.enumerate().map(
            as_written(
                lambda i, pair: (
                    tf.image.stateless_random_flip_left_right(
                        pair[0], tf.stack([tf.cast(seed, tf.int64), i])
                    ),
                    pair[1],
                )
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if training and erase_border > 0:
        areas = tf.constant(border_areas(image_size))
        ds = ds.enumerate().map(
            as_written(
                lambda i, pair: (
                    erased(
                        pair[0], erase_border, tf.stack([tf.cast(seed, tf.int64) + SALT, i]), areas
                    ),
                    pair[1],
                )
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    ds = ds.batch(batch_size)
    if preprocess is not None:
        ds = ds.map(lambda images, y: (preprocess(images), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds if training else ds.with_options(READ_ONCE)


def fold_dataset(
    fold_cfg: Config, table: pd.DataFrame, classes: list[str], batch_size: int = 16
) -> tf.data.Dataset:
    """Inference batches as a trained fold saw its data: its dataset, size, channels, labels."""
    return make_dataset(
        fold_cfg.data.dataset_dir,
        table,
        classes,
        image_size=fold_cfg.data.image_size,
        channels=fold_cfg.data.channels,
        batch_size=batch_size,
        multi_label=fold_cfg.data.multi_label,
        outside_lungs=fold_cfg.data.outside_lungs,
        crop=fold_cfg.data.crop,
        crop_margin=fold_cfg.data.crop_margin,
    )


def cache_file(
    folder: Path,
    paths: list[str],
    labels: np.ndarray,
    image_size: int,
    outside: str = "keep",
    crop_margin: float | None = None,
    boxes: np.ndarray | None = None,
) -> Path:
    """A cache file named by what it holds: the images (path, size, modification time), labels and
    image size.

    Another split, size or a changed image gives another name, so a stale cache is never read. A
    lock left by an interrupted first pass (the cache is complete only after one whole pass) is
    removed.
    """
    digest = hashlib.sha256(f"{image_size}\n".encode())
    if outside != "keep":  # the cache holds the filled or blurred images
        digest.update(f"outside_lungs={outside}\n".encode())
    if crop_margin is not None:  # the crops, and the lung fields they came from
        digest.update(f"crop_margin={crop_margin}\n".encode())
        digest.update(np.ascontiguousarray(boxes).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = (
            f"cannot use it as the cache folder ({exc.strerror}); give a writable folder, or memory"
        )
        raise DataError(f"data.cache = {str(folder)!r}: {problem}") from None
    base = folder / f"cxr-{image_size}px-{len(paths)}-{digest.hexdigest()[:16]}"
    if not Path(f"{base}.index").is_file():
        for stale in folder.glob(f"{base.name}*"):
            stale.unlink()
    return base


@contextmanager
def images_named_on_failure(dataset_dir: Path, table: pd.DataFrame) -> Iterator[None]:
    """Turn TensorFlow's nameless decode error into a DataError naming the unreadable files.

    The files are only re-read (with Pillow) after a failure; when all of them read, the error was
    not theirs and is raised as it came.
    """
    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
        bad = []
        for image in table["image"]:
            try:
                read_image(dataset_dir / image)
            except DataError:
                bad.append(image)
        if not bad:
            raise
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(
            f"{len(bad)} image(s) in {dataset_dir} cannot be decoded: {shown}; replace them, or "
            "make the dataset again with --overwrite"
        ) from None


def decode_image(
    path: tf.Tensor, image_size: int, channels: int, box: tf.Tensor | None = None
) -> tf.Tensor:
    """PNG/JPEG file -> (S, S, channels) float32 in [0, 255]; grey is repeated for 3 channels;
    `box` (top, left, height, width in the stored pixels): that part of the film only."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
    if box is not None:
        image = tf.image.crop_to_bounding_box(image, box[0], box[1], box[2], box[3])
    image = tf.cast(image, tf.float32)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    image.set_shape((image_size, image_size, 1))
    return tf.repeat(image, channels, axis=-1) if channels > 1 else image


def load_split(
    dataset_dir: Path,
    fold: int,
    split: Split,
    classes: list[str] | None = None,
    multi_label: bool = False,
):
    """Read labels.csv, pick a split and resolve class names; checks every class is present."""
    table = read_labels(dataset_dir)
    names = classes or table_class_names(table, multi_label)
    return checked_split(table, fold, split, names, multi_label), names


def checked_split(
    table: pd.DataFrame, fold: int, split: Split, classes: list[str], multi_label: bool = False
) -> pd.DataFrame:
    """A split of an already-read table, refusing one that lacks a class."""
    part = select_split(table, fold, split)
    present = set(table_class_names(part, multi_label))
    missing = [name for name in classes if name not in present]
    if missing:
        raise DataError(
            f"{split} split of fold {fold} has no image of class(es) {', '.join(missing)}; make "
            "the dataset with fewer folds"
        )
    return part
