"""Benchmark: training images/s fed by cxr's tf.data pipeline (from disk, or from a cache file) vs
from tensors in memory.

Same model, batch size and number of steps; one warm-up epoch each, then the best of three timed
epochs.
    .venv/bin/python scripts/bench_train_pipeline.py [--images 320] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cxr.config import load_config
from cxr.data.pipeline import load_split, make_dataset
from cxr.data.sources import DownloadOptions, download
from cxr.models.build import build_model
from cxr.models.metrics import make_loss_and_metrics


def epoch_seconds(model: keras.Model, data: tf.data.Dataset, repeats: int = 3) -> float:
    model.fit(data, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    cfg = load_config("configs/synthetic.yaml", [f"data.image_size={args.size}"])
    with tempfile.TemporaryDirectory() as folder:
        dataset = download(
            "synthetic",
            DownloadOptions(
                dest=Path(folder), n=args.images, size=args.size, folds=2, show_progress=False
            ),
        )
        table, classes = load_split(dataset, 0, "train")
        batch = cfg.train.batch_size
        streamed = make_dataset(
            dataset, table, classes, image_size=args.size, batch_size=batch, training=True
        )
        cached = make_dataset(
            dataset,
            table,
            classes,
            image_size=args.size,
            batch_size=batch,
            training=True,
            cache=Path(folder) / "cache",
        )
        pixels = np.concatenate(
            [
                x.numpy()
                for x, _ in make_dataset(
                    dataset, table, classes, image_size=args.size, batch_size=64
                )
            ]
        )
        labels = np.array([classes.index(label) for label in table["label"]], dtype=np.int32)
        in_memory = (
            tf.data.Dataset.from_tensor_slices((pixels, labels))
            .batch(batch)
            .prefetch(tf.data.AUTOTUNE)
        )
        model = build_model(cfg, len(classes))
        loss, metrics = make_loss_and_metrics(len(classes), False)
        model.compile(
            optimizer=keras.optimizers.Adam(cfg.train.learning_rate), loss=loss, metrics=metrics
        )
        disk = epoch_seconds(model, streamed)
        cache_file = epoch_seconds(model, cached)  # the warm-up epoch writes the cache file
        memory = epoch_seconds(model, in_memory)
    n = len(table)
    print(f"{cfg.model.name} at {args.size} px, {n} training images, batch {batch}")
    print(
        f"from disk: {n / disk:.1f} img/s; from a cache file: {n / cache_file:.1f} img/s; from "
        f"memory: {n / memory:.1f} img/s"
    )
    print(f"disk / memory: {memory / disk:.2f}; cache file / memory: {memory / cache_file:.2f}")


if __name__ == "__main__":
    main()
