"""Benchmark: the batched explanation engine against inference, a per-image loop, tf-keras-vis
and the whole `cxr explain`.

For each model it runs, each in a fresh process so that peak memory is its own (random weights:
speed does not depend on them):
  inference     a tf.function forward pass over the batches: the ceiling;
  engine        cxr's explain_batch, Grad-CAM of the predicted class;
  loop          the keras.io / seed 004 style: one predict and one tape per image;
  tf-keras-vis  its Gradcam on the same model, layer and batches (targets given, found outside
                the clock);
  cxr explain   explain_fold on a saved run of the same model and a synthetic fold of
                --explain-images images: model loading and tracing, reading PNGs, maps, overlays,
                report, montage; each of two runs does all of it, and the faster counts.
Prints images/s, the ratios, and each mode's extra peak resident memory above the process after
building the model (sampled every 2 ms). tf-keras-vis is needed only here:
`.venv/bin/pip install tf-keras-vis`.
    .venv/bin/python scripts/bench_explain.py [--images 64] [--batch 32] \\
        [--models pna_cnn:256 ...] [--xla]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

MODES = ("inference", "engine", "loop", "tf-keras-vis", "cxr explain")
EXTRA_MODES = ("engine xla",)  # with --xla
# VGG16 + three valid 3x3 convs + 2x2 pool needs 256 px or more
CASES = (
    "pna_cnn:256",
    "pna_cnn:512",
    "vgg16_cardiomegaly:256",
)
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 2**20


class PeakMemory:
    """The highest resident memory seen by a sampling thread while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.base, self.peak, self._stop = rss_mb(), rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """Seconds of the fastest of `repeats` runs, after one warm-up run that traces."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def child(mode: str, name: str, size: int, args: argparse.Namespace) -> dict:
    """One measurement in this process: images/s and extra peak MB."""
    import keras
    import numpy as np
    import tensorflow as tf

    from cxr.config import load_config
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe
    from cxr.models.registry import build_model, get_model_spec

    channels = 3 if name == "vgg16_cardiomegaly" else 1
    cfg = load_config(
        None,
        [
            f"model.name={name}",
            f"data.image_size={size}",
            f"data.channels={channels}",
            f"explain.batch_size={args.batch}",
        ],
    )
    keras.utils.set_random_seed(0)
    model = build_model(cfg, 2)
    layer = get_model_spec(name).explain_layer
    images = (
        np.random.default_rng(0)
        .uniform(0, 255, (args.images, size, size, channels))
        .astype("float32")
    )
    batches = [images[i : i + args.batch] for i in range(0, args.images, args.batch)]
    count = args.images
    if mode == "inference":
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        run = lambda: [forward(b).numpy() for b in batches]  # noqa: E731
    elif mode in ("engine", "engine xla"):
        probe = make_probe(model, layer, jit_compile=mode == "engine xla")
        run = lambda: [explain_batch(probe, b, pad_to=args.batch) for b in batches]  # noqa: E731
    elif mode == "loop":
        count = min(args.loop_images, args.images)
        run = lambda: per_image_loop(model, layer, images[:count])  # noqa: E731
    elif mode == "tf-keras-vis":
        run = tf_keras_vis_run(model, layer, batches)
    else:
        run = explain_run(cfg, model, args)
    with PeakMemory() as memory:
        seconds = (
            min(timed(run), timed(run))
            if mode == "cxr explain"
            else best_of(1 if mode == "loop" else 2, run)
        )
    return {
        "rate": (args.images if mode == "cxr explain" else count) / seconds,
        "extra_mb": memory.peak - memory.base,
    }


def per_image_loop(model, layer: str, images) -> None:
    """The keras.io / seed 004 style: one predict and one tape per image."""
    import keras
    import numpy as np
    import tensorflow as tf

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


def tf_keras_vis_run(model, layer: str, batches: list) -> Callable[[], object]:
    """tf-keras-vis' Gradcam of each image's predicted class (the classes found before the clock
    starts)."""
    import numpy as np

    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        raise SystemExit(
            "tf-keras-vis is not installed: .venv/bin/pip install tf-keras-vis (the benchmark "
            "needs it, cxr does not)"
        ) from None
    gradcam = Gradcam(model, clone=True)
    targets = [np.argmax(model.predict(b, verbose=0), axis=1).tolist() for b in batches]
    return lambda: [
        gradcam(CategoricalScore(t), b, penultimate_layer=layer)
        for b, t in zip(batches, targets, strict=True)
    ]


def explain_run(cfg, model, args: argparse.Namespace) -> Callable[[], object]:
    """A run folder holding `model` and a synthetic fold of args.images validation images; returns
    the explain call."""
    from cxr.data.labels import read_labels
    from cxr.data.pipeline import checked_split
    from cxr.data.sources import DownloadOptions, download
    from cxr.explain.run import ExplainOptions, explain_fold
    from cxr.runs import fold_run
    from cxr.train import write_run_inputs

    root = Path(tempfile.mkdtemp(prefix="bench_explain_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    dataset = download(
        "synthetic",
        DownloadOptions(
            dest=root / "data",
            n=2 * args.explain_images,
            size=cfg.data.image_size,
            folds=2,
            show_progress=False,
        ),
    )
    data = cfg.data.model_copy(update={"root": dataset.parent, "dataset": dataset.name, "fold": 0})
    cfg = cfg.model_copy(
        update={
            "data": data,
            "experiment": cfg.experiment.model_copy(update={"output_dir": root / "runs"}),
        }
    )
    table = read_labels(dataset)
    classes = sorted(table["label"].unique())
    validation, training = (
        checked_split(table, 0, split, classes) for split in ("validation", "train")
    )
    run = fold_run(cfg, 0)
    run.folder.mkdir(parents=True)
    write_run_inputs(run, cfg, 0, classes, training, validation)
    model.save(run.model)
    args.images = len(validation)  # the fold's size, near args.explain_images
    return lambda: explain_fold(cfg, 0, ExplainOptions(overwrite=True))


def measure(mode: str, case: str, args: argparse.Namespace) -> dict:
    """Run one mode in a fresh process; its JSON line is the last line of its output."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--models",
        case,
        "--images",
        str(args.images),
        "--batch",
        str(args.batch),
        "--loop-images",
        str(args.loop_images),
        "--explain-images",
        str(args.explain_images),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--loop-images", type=int, default=16, help="images for the (slow) per-image loop"
    )
    parser.add_argument(
        "--explain-images",
        type=int,
        default=256,
        help="the fold's size for the whole `cxr explain`",
    )
    parser.add_argument("--models", nargs="+", default=list(CASES), help="NAME:SIZE cases")
    parser.add_argument(
        "--xla", action="store_true", help="also the engine compiled with XLA (explain.xla)"
    )
    parser.add_argument("--child", choices=MODES + EXTRA_MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, size = args.models[0].split(":")
        print(json.dumps(child(args.child, name, int(size), args)))
        return
    import tensorflow as tf

    devices = ", ".join(d.device_type for d in tf.config.list_logical_devices())
    print(
        f"TensorFlow {tf.__version__} on {devices}, {os.cpu_count()} CPU cores; {args.images} "
        f"images, batch {args.batch}"
    )
    print(
        f"{'model':>24} | {'img/s: inference':>16} {'engine':>7} {'loop':>6} {'tkv':>6} "
        f"{'explain':>7} | "
        f"{'engine/inference':>16} {'engine/loop':>11} {'engine/tkv':>10} "
        f"{'explain/inference':>17} | "
        f"{'extra MB: inference':>19} {'engine':>6} {'tkv':>6}"
    )
    for case in args.models:
        results = {mode: measure(mode, case, args) for mode in MODES}
        rate = {mode: r["rate"] for mode, r in results.items()}
        extra = {mode: r["extra_mb"] for mode, r in results.items()}
        print(
            f"{case:>24} | {rate['inference']:>16.1f} {rate['engine']:>7.1f} {rate['loop']:>6.1f} "
            f"{rate['tf-keras-vis']:>6.1f} "
            f"{rate['cxr explain']:>7.1f} | {rate['engine'] / rate['inference']:>16.2f} "
            f"{rate['engine'] / rate['loop']:>10.1f}x "
            f"{rate['engine'] / rate['tf-keras-vis']:>9.1f}x "
            f"{rate['cxr explain'] / rate['inference']:>17.2f} | "
            f"{extra['inference']:>19.0f} {extra['engine']:>6.0f} {extra['tf-keras-vis']:>6.0f}",
            flush=True,
        )
        if args.xla:
            xla = measure("engine xla", case, args)["rate"]
            print(
                f"{case:>24} | engine with XLA: {xla:.1f} img/s, {xla / rate['engine']:.2f}x the "
                "plain engine",
                flush=True,
            )


if __name__ == "__main__":
    main()
