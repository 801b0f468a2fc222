"""Train the lung-field U-Net that ships with cxr; report how well it segments held-out films.

Reads a folder in the layout of the team's lung-mask set (images/, masks/, labels.csv with image,
mask, source, patient_id, finding); those images and masks must never be committed. Holds out 20% of
each hospital's patients for testing and 10% of the rest for choosing the epoch, trains on the
others, and prints Dice and HD95 (95th-percentile Hausdorff distance, in pixels of the 256-px masks)
per hospital. With --cross it also trains on one hospital and tests on all of the other, both ways.

Augmentation matches real variation between films: exposure (gamma, contrast, brightness), small
rotations, scales and shifts. No horizontal flips: a flipped film puts the heart on the right and
the smaller left lung on the wrong side, which the model (and the plausibility check) should never
learn.

    python scripts/train_lung_model.py ../shared/data/lung-masks --cross \\
        --out cxr/lungs/lung_unet.keras
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from scipy import ndimage
from sklearn.model_selection import train_test_split

from cxr.lungs.model import INPUT_SIZE, build_unet, to_input


def load(folder: Path, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([np.asarray(Image.open(folder / p).convert("L")) for p in table["image"]])
    masks = np.stack([np.asarray(Image.open(folder / p)) > 127 for p in table["mask"]])
    return images, masks


def augmenter(seed: int) -> keras.Sequential:
    """Geometric changes applied to image and mask together (stacked as two channels)."""
    return keras.Sequential(
        [
            keras.layers.RandomRotation(0.02, fill_mode="constant", seed=seed),  # about ±7 degrees
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 2),
        ]
    )


def dataset(
    images: np.ndarray, masks: np.ndarray, batch: int, training: bool, seed: int
) -> tf.data.Dataset:
    x = to_input(list(images))
    y = to_input([m.astype(np.uint8) * 255 for m in masks]) / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if not training:
        return ds.batch(batch)
    geometry = augmenter(seed)
    rng = tf.random.Generator.from_seed(seed)

    def augment(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        stacked = geometry(tf.concat([image, mask], axis=-1), training=True)
        image, mask = stacked[..., :1], stacked[..., 1:]
        n = tf.shape(image)[0]
        gamma = tf.exp(rng.uniform((n, 1, 1, 1), np.log(0.7), np.log(1.4)))
        contrast = rng.uniform((n, 1, 1, 1), 0.8, 1.2)
        shift = rng.uniform((n, 1, 1, 1), -20.0, 20.0)
        image = 255.0 * tf.pow(tf.clip_by_value(image / 255.0, 0.0, 1.0), gamma)
        mean = tf.reduce_mean(image, axis=(1, 2, 3), keepdims=True)
        image = tf.clip_by_value((image - mean) * contrast + mean + shift, 0.0, 255.0)
        return image, tf.round(mask)

    return ds.shuffle(len(x), seed=seed).batch(batch).map(augment).prefetch(2)


def dice_loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    p = tf.sigmoid(logits)
    overlap = tf.reduce_sum(y_true * p, axis=(1, 2, 3))
    return 1.0 - (2 * overlap + 1.0) / (tf.reduce_sum(y_true + p, axis=(1, 2, 3)) + 1.0)


def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    bce = tf.reduce_mean(
        keras.losses.binary_crossentropy(y_true, logits, from_logits=True), axis=(1, 2)
    )
    return bce + dice_loss(y_true, logits)


def fit(images: np.ndarray, masks: np.ndarray, epochs: int, seed: int) -> keras.Model:
    """Train on 90% of the given images, keeping the epoch with the lowest loss on the other 10%."""
    keras.utils.set_random_seed(seed)
    index = np.arange(len(images))
    train_idx, val_idx = train_test_split(index, test_size=0.1, random_state=seed)
    model = build_unet()
    model.compile(keras.optimizers.Adam(1e-3), loss=loss)
    best = Path(f"/tmp/cxr-lung-best-{seed}.weights.h5")
    model.fit(
        dataset(images[train_idx], masks[train_idx], 8, True, seed),
        validation_data=dataset(images[val_idx], masks[val_idx], 16, False, seed),
        epochs=epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.ModelCheckpoint(best, save_best_only=True, save_weights_only=True),
            keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=4),
        ],
    )
    model.load_weights(best)
    return model


def predict(model: keras.Model, images: np.ndarray, size: int) -> np.ndarray:
    logits = model.predict(to_input(list(images)), batch_size=16, verbose=0)
    probs = tf.image.resize(tf.sigmoid(logits), (size, size), method="bilinear").numpy()[..., 0]
    return probs >= 0.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def hd95(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the two masks' boundaries, in pixels."""
    if not a.any() or not b.any():
        return float("inf")
    edge_a, edge_b = a & ~ndimage.binary_erosion(a), b & ~ndimage.binary_erosion(b)
    to_b, to_a = ndimage.distance_transform_edt(~edge_b), ndimage.distance_transform_edt(~edge_a)
    return float(max(np.percentile(to_b[edge_a], 95), np.percentile(to_a[edge_b], 95)))


def scores(model: keras.Model, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    predicted = predict(model, images, masks.shape[1])
    d = [dice(p, m) for p, m in zip(predicted, masks, strict=True)]
    h = [hd95(p, m) for p, m in zip(predicted, masks, strict=True)]
    return {
        "images": len(d),
        "dice_mean": float(np.mean(d)),
        "dice_median": float(np.median(d)),
        "dice_min": float(np.min(d)),
        "hd95_mean": float(np.mean(h)),
        "hd95_median": float(np.median(h)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, default=Path("cxr/lungs/lung_unet.keras"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--cross", action="store_true", help="also train on one hospital, test on the other"
    )
    parser.add_argument("--cross-epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    table = pd.read_csv(args.data / "labels.csv", dtype=str)
    images, masks = load(args.data, table)
    strata = table["source"] + "/" + table["finding"]
    train_idx, test_idx = train_test_split(
        np.arange(len(table)), test_size=0.2, stratify=strata, random_state=args.seed
    )
    model = fit(images[train_idx], masks[train_idx], args.epochs, args.seed)
    report: dict = {
        "input_size": INPUT_SIZE,
        "train_images": len(train_idx),
        "epochs": args.epochs,
        "within": {},
    }
    for source in sorted(table["source"].unique()):
        held = test_idx[table.loc[test_idx, "source"].to_numpy() == source]
        report["within"][source] = scores(model, images[held], masks[held])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shipped = build_unet()  # uncompiled: the file holds the weights, not the optimizer's state
    shipped.set_weights(model.get_weights())
    shipped.save(args.out)
    report["model"] = str(args.out)
    if args.cross:
        report["across"] = {}
        for train_on, test_on in (("shenzhen", "montgomery"), ("montgomery", "shenzhen")):
            on, off = (
                (table["source"] == train_on).to_numpy(),
                (table["source"] == test_on).to_numpy(),
            )
            other = fit(images[on], masks[on], args.cross_epochs, args.seed)
            report["across"][f"{train_on} -> {test_on}"] = scores(other, images[off], masks[off])
    report["minutes"] = round((time.time() - started) / 60, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
