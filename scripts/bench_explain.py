"""Benchmark: the batched explanation engine against inference, a per-image loop, tf-keras-vis
and the whole `cxr explain`, in interleaved rounds.

Each round runs every mode once, each in a fresh process so that peak memory is its own (random
weights: speed does not depend on them), and each mode's ratio is taken against the inference of
its own round; the median and range over rounds are printed, so one noisy run does not decide:
  inference     a tf.function forward pass over the batches: the ceiling;
  inference fused  the same with the batch norms fused into the convolutions, as `cxr explain`
                and `cxr evaluate` run a model (cxr.models.fusing): the ceiling of that model;
  engine        cxr's explain_batch for every method of the catalog (or --methods), the class
                predicted in the same pass; methods whose passes repeat (per channel, mask...: the
                catalog's `per`) run on --slow-images images;
  loop          the keras.io / seed 004 style: one predict and one tape per image;
  tf-keras-vis  its Gradcam on the same model, layer and batches (targets given, found outside
                the clock);
  cxr explain   explain_fold on a saved run of the same model and a synthetic fold of each
                --explain-images size: model loading and tracing, reading PNGs, maps, overlays,
                report, montage, all of it in every run;
  cold inference  the same saved run and fold, cold, without the maps: open the fold, load and
                fuse the model, stream the PNGs, predict (what `cxr evaluate` does before its
                metrics): the whole run's fixed costs that inference itself pays.
Prints images/s, the ratios, and the extra peak resident memory above the process after building
the model (sampled every 2 ms) of inference, Grad-CAM and tf-keras-vis (the whole run is timed
unsampled). tf-keras-vis is needed only here: `.venv/bin/pip install tf-keras-vis`.
    .venv/bin/python scripts/bench_explain.py [--rounds 3] [--images 64] [--batch 32] \\
        [--models pna_cnn:256 ...] [--methods gradcam ...] [--explain-images 256 1024] [--xla]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

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

    from cxr.catalogs.models import get_model_spec
    from cxr.config import load_config
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe
    from cxr.models.build import build_model
    from cxr.models.fusing import fuse_batch_norm

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
    if mode.startswith("inference"):
        if mode == "inference fused":
            model = fuse_batch_norm(model)
        forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        run = lambda: [forward(b).numpy() for b in batches]  # noqa: E731
    elif mode == "engine":
        return engine_rates(cfg, model, layer, images, args)
    elif mode == "engine xla":
        probe = make_probe(model, layer, jit_compile=True)
        run = lambda: [explain_batch(probe, b, pad_to=args.batch) for b in batches]  # noqa: E731
    elif mode == "loop":
        count = min(args.loop_images, args.images)
        run = lambda: per_image_loop(model, layer, images[:count])  # noqa: E731
    elif mode == "tf-keras-vis":
        run = tf_keras_vis_run(model, layer, batches)
    else:  # cxr explain N or cold inference N: one whole run, cold (loading, tracing included)
        made = explain_run if mode.startswith("cxr explain") else cold_inference_run
        run = made(cfg, model, args, int(mode.split()[-1]))
        count = args.images
        os.sync()  # the fold just written is on disk before the clock starts, not flushed meanwhile
    if mode.startswith(("cxr explain", "cold inference")):
        # unsampled: the sampling thread takes the GIL 500 times a second from a run that is
        # largely Python (loading, tracing, report rows); its memory is bench_explain_memory.py's
        return {"rate": count / timed(run), "extra_mb": None}
    with PeakMemory() as memory:
        seconds = best_of(1 if mode == "loop" else 2, run)
    return {"rate": count / seconds, "extra_mb": memory.peak - memory.base}


def engine_rates(cfg, model, layer: str, images, args: argparse.Namespace) -> dict:
    """images/s of explain_batch for each method (Grad-CAM first, with its extra peak memory)."""
    from cxr.catalogs.methods import METHODS_BY_NAME, method_parameters
    from cxr.explain.methods import explain_batch
    from cxr.explain.probe import make_probe

    rates, extra_mb = {}, 0.0
    for name in args.methods:
        spec = METHODS_BY_NAME[name]
        # a method whose passes repeat (per channel, mask...) runs on --slow-images only
        count = min(args.slow_images, args.images) if spec.per else args.images
        batch = min(args.batch, count)
        batches = [images[i : i + batch] for i in range(0, count, batch)]
        probe = make_probe(
            model, layer if spec.layer else None, parameters=method_parameters(cfg.explain)
        )

        def run(probe=probe, batches=batches, batch=batch, name=name) -> None:
            for b in batches:
                explain_batch(probe, b, method=name, pad_to=batch)

        with PeakMemory() as memory:
            seconds = best_of(1 if spec.per else 2, run)
        if name == "gradcam":
            extra_mb = memory.peak - memory.base
        rates[name] = count / seconds
    return {"rates": rates, "extra_mb": extra_mb}


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


def explain_run(cfg, model, args: argparse.Namespace, size: int) -> Callable[[], object]:
    """The explain call on saved_fold's run."""
    from cxr.explain.run import ExplainOptions, explain_fold

    cfg = saved_fold(cfg, model, args, size)
    return lambda: explain_fold(cfg, 0, ExplainOptions(overwrite=True))


def cold_inference_run(cfg, model, args: argparse.Namespace, size: int) -> Callable[[], object]:
    """What `cxr evaluate` does before its metrics, on saved_fold's run, cold: open the fold, load
    the model and fuse its batch norms (as explain does), stream the fold's PNGs, predict."""
    from cxr.data.pipeline import fold_dataset
    from cxr.models.fusing import fuse_batch_norm
    from cxr.trained import TrainedFold

    cfg = saved_fold(cfg, model, args, size)

    def run() -> None:
        trained = TrainedFold.open(cfg, 0)
        table = trained.table()
        fused = fuse_batch_norm(trained.run.load_model())
        for images, _ in fold_dataset(trained.settings, table, trained.classes, trained.batch_size):
            fused.predict_on_batch(images)

    return run


def saved_fold(cfg, model, args: argparse.Namespace, size: int):
    """A run folder holding `model` and a synthetic fold of about `size` validation images; returns
    its config (and sets args.images to the fold's size)."""
    from cxr.data.labels import read_labels
    from cxr.data.pipeline import checked_split
    from cxr.data.sources import DownloadOptions, download
    from cxr.runs import fold_run
    from cxr.train import write_run_inputs

    root = Path(tempfile.mkdtemp(prefix="bench_explain_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    dataset = download(
        "synthetic",
        DownloadOptions(
            dest=root / "data",
            n=2 * size,
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
    args.images = len(validation)  # the fold's size, near `size`
    return cfg


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
        "--slow-images",
        str(args.slow_images),
        "--methods",
        *args.methods,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_round(case: str, args: argparse.Namespace) -> dict[str, dict]:
    """Every mode once, in this order, each in its own process."""
    modes = ["inference", "inference fused", "engine", "loop", "tf-keras-vis"]
    for n in args.explain_images:
        modes += [f"cxr explain {n}", f"cold inference {n}"]
    modes += ["engine xla"] if args.xla else []
    return {mode: measure(mode, case, args) for mode in modes}


def spread(values: list[float], digits: int = 2) -> str:
    """'median [min, max]' over the rounds."""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}, {max(values):.{digits}f}]"
    )


def report(case: str, rounds: list[dict[str, dict]], args: argparse.Namespace) -> None:
    """One line per mode and per method: images/s, and its ratio to the same round's inference."""
    inference = [r["inference"]["rate"] for r in rounds]
    lines: list[tuple[str, list[float]]] = []
    for mode in rounds[0]:
        if mode == "engine":
            lines += [
                (f"engine {m}", [r["engine"]["rates"][m] for r in rounds]) for m in args.methods
            ]
        else:
            lines.append((mode, [r[mode]["rate"] for r in rounds]))
    print(f"\n{case}: median [min, max] of {len(rounds)} interleaved rounds")
    print(f"{'mode':>34} | {'images/s':>24} | {'ratio to inference':>22}")
    for mode, rates in lines:
        ratios = [rate / base for rate, base in zip(rates, inference, strict=True)]
        print(f"{mode:>34} | {spread(rates, 1):>24} | {spread(ratios):>22}")
    rate = {mode: rates for mode, rates in lines}
    # (mode, baseline, digits): how many times faster than the others; the whole run against the
    # ceiling of the fused model it runs
    pairs = [("engine gradcam", "loop", 1), ("engine gradcam", "tf-keras-vis", 1)]
    for n in args.explain_images:
        pairs += [(f"cxr explain {n}", "inference fused", 2)]
        pairs += [(f"cxr explain {n}", f"cold inference {n}", 2)]
    for mode, other, digits in pairs:
        ratios = [g / o for g, o in zip(rate[mode], rate[other], strict=True)]
        print(f"{f'{mode} / {other}':>34} | {'':>24} | {spread(ratios, digits):>22}")
    memory = {
        mode: statistics.median(r[mode]["extra_mb"] for r in rounds)
        for mode in ("inference", "engine", "tf-keras-vis")
    }
    print(
        f"{'extra peak MB (median)':>34} | inference {memory['inference']:.0f}, Grad-CAM "
        f"{memory['engine']:.0f}, tf-keras-vis {memory['tf-keras-vis']:.0f}",
        flush=True,
    )


def main() -> None:
    from cxr.catalogs.methods import METHOD_NAMES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (at least 3)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--loop-images", type=int, default=16, help="images for the (slow) per-image loop"
    )
    parser.add_argument(
        "--slow-images",
        type=int,
        default=8,
        help="images for methods whose passes repeat per channel, mask, position...",
    )
    parser.add_argument(
        "--explain-images",
        type=int,
        nargs="+",
        default=[256, 1024],
        help="fold sizes for the whole `cxr explain` (its fixed costs weigh more in a small fold)",
    )
    parser.add_argument("--models", nargs="+", default=list(CASES), help="NAME:SIZE cases")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHOD_NAMES),
        choices=METHOD_NAMES,
        metavar="METHOD",
        help="engine rows (default: every method of the catalog)",
    )
    parser.add_argument(
        "--xla", action="store_true", help="also the engine compiled with XLA (explain.xla)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, size = args.models[0].split(":")
        print(json.dumps(child(args.child, name, int(size), args)))
        return
    if args.rounds < 3:
        parser.error("--rounds: at least 3, so that a median means something")
    if "gradcam" not in args.methods:
        args.methods.insert(0, "gradcam")  # the engine's reference row and its memory
    import tensorflow as tf

    devices = ", ".join(d.device_type for d in tf.config.list_logical_devices())
    print(
        f"TensorFlow {tf.__version__} on {devices}, {os.cpu_count()} CPU cores; {args.images} "
        f"images, batch {args.batch}; {args.slow_images} images for multi-pass methods"
    )
    for case in args.models:
        rounds = [one_round(case, args) for _ in range(args.rounds)]
        report(case, rounds, args)


if __name__ == "__main__":
    main()
