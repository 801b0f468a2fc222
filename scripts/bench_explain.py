"""Benchmark: the batched explanation engine against plain batched inference and a per-image loop.

Prints images/s and ratios measured side by side in one run (random weights: speed does not depend on them).
    .venv/bin/python scripts/bench_explain.py [--images 64] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from cxr.config import load_config
from cxr.explain.methods import explain_batch
from cxr.explain.probe import make_probe
from cxr.models.registry import build_model, get_model_spec

CASES = [("pna_cnn", 256, 1), ("pna_cnn", 512, 1), ("vgg16_cardiomegaly", 256, 1)]


def best_of(repeats: int, run) -> float:
    """Seconds of the fastest of `repeats` runs (after one warm-up run that traces)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def per_image_loop(model: keras.Model, layer: str, images: np.ndarray) -> None:
    """The keras.io / seed 004 style: one predict and one tape per image."""
    grad_model = keras.Model(model.input, [model.get_layer(layer).output, model.output])
    for image in images:
        predicted = int(np.argmax(model.predict(image[None], verbose=0)[0]))
        with tf.GradientTape() as tape:
            activations, logits = grad_model(image[None])
            target = logits[:, predicted]
        grads = tape.gradient(target, activations)
        weights = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = tf.nn.relu(tf.reduce_sum(activations[0] * weights, axis=-1))
        _ = (heatmap / (tf.reduce_max(heatmap) + 1e-12)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--loop-images", type=int, default=16, help="images for the (slow) per-image loop")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    print(f"{'model':>20} {'size':>5} | {'inference':>10} {'engine':>10} {'loop':>8} img/s | engine/inference  engine/loop")
    for name, size, channels in CASES:
        rates = measure(name, size, channels, args)
        print(f"{name:>20} {size:>5} | {rates[0]:>10.1f} {rates[1]:>10.1f} {rates[2]:>8.1f}       | "
              f"{rates[1] / rates[0]:>16.2f}  {rates[1] / rates[2]:>11.1f}")  # fmt: skip


def measure(name: str, size: int, channels: int, args: argparse.Namespace) -> list[float]:
    """Images/s of inference, the engine and the per-image loop for one model."""
    cfg = load_config(None, [f"model.name={name}", f"data.image_size={size}", f"data.channels={channels}"])
    model = build_model(cfg, 2)
    layer = get_model_spec(name).explain_layer
    images = np.random.default_rng(0).uniform(0, 255, (args.images, size, size, channels)).astype("float32")
    batches = [images[i : i + args.batch] for i in range(0, args.images, args.batch)]
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    probe = make_probe(model, layer)
    inference = best_of(2, lambda: [forward(b).numpy() for b in batches])
    engine = best_of(2, lambda: [explain_batch(probe, b) for b in batches])
    loop_images = images[: args.loop_images]
    loop = best_of(1, lambda: per_image_loop(model, layer, loop_images)) * args.images / len(loop_images)
    return [args.images / t for t in (inference, engine, loop)]


if __name__ == "__main__":
    main()
