"""Benchmark: the whole `cxr audit` of a trained fold against the plain inference of its images.

Each round runs in a fresh process (importing TensorFlow, loading the model and tracing every
method are part of what a user waits for) and times `audit_folds` from the call to its return,
with the audit's own parts (its "audited:" line); then, in the same process, the plain inference
of the same images (the model loaded, the images streamed and predicted: what `cxr evaluate`
does), twice, the second warm. The ratio is the audit over the warm inference. It also counts
the images the audit streams through tf.data and the files it opens with Pillow, as multiples of
the fold's size. Medians and ranges over the rounds.
Needs a trained run: `bash scripts/demo.sh` (or `cxr download synthetic` and `cxr train`) first;
`--on DATASET` audits every image of another dataset (e.g. a 1,000-image synthetic set).

    .venv/bin/python scripts/bench_audit.py [--config configs/synthetic.yaml] [--fold 0] \\
        [--methods gradcam,hirescam,gradcam++,guided_backprop] [--repeats 3] [--on DATASET] \\
        [--set audit.sample=16 ...]

The demo's methods by default (guided backpropagation among them); `--methods
gradcam,gradcam++,hirescam` are `cxr audit`'s own default, and `--set audit.sample=16` the
audit's default sample where the demo's config takes 8.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time

DEMO_METHODS = "gradcam,hirescam,gradcam++,guided_backprop"


class PartsLine(logging.Handler):
    """Keeps the audit's "fold K audited: part s, ..." line."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if re.match(r"fold \d+ audited: ", message):
            for item in message.split(" audited: ", 1)[1].split(", "):
                name, seconds = item.rsplit(" ", 2)[:2]
                self.parts[name] = float(seconds)


def inference_seconds(cfg, fold: int, on) -> tuple[float, int]:
    """The plain inference of the audited images: model loaded, images streamed, predicted."""
    from cxr.data.pipeline import fold_dataset
    from cxr.trained import TrainedFold

    start = time.perf_counter()
    trained = TrainedFold.open(cfg, fold, on)
    table = trained.table()
    model = trained.run.load_model()
    for images, _ in fold_dataset(trained.settings, table, trained.classes, trained.batch_size):
        model.predict_on_batch(images)
    return time.perf_counter() - start, len(table)


def child(
    config: str, fold: int, methods: list[str], on_name: str | None, overrides: list[str]
) -> dict:
    """One audit in this process, with the reads counted, then the inference of its images."""
    import PIL.Image

    import cxr.data.pipeline as pipeline
    from cxr.audit.run import audit_folds
    from cxr.config import load_config
    from cxr.external import open_external

    counts = {"streamed": 0, "opened": 0}
    make_dataset, image_open = pipeline.make_dataset, PIL.Image.open

    def counted_dataset(dataset_dir, table, *args, **kwargs):
        counts["streamed"] += len(table)
        return make_dataset(dataset_dir, table, *args, **kwargs)

    def counted_open(*args, **kwargs):
        counts["opened"] += 1
        return image_open(*args, **kwargs)

    pipeline.make_dataset, PIL.Image.open = counted_dataset, counted_open
    cfg = load_config(config, overrides)
    on = open_external(cfg, on_name, None) if on_name else None
    parts = PartsLine()
    logging.getLogger("cxr.audit.run").addHandler(parts)
    logging.getLogger("cxr.audit.run").setLevel(logging.INFO)
    start = time.perf_counter()
    audit_folds(cfg, [fold], methods, on=on)
    seconds = time.perf_counter() - start
    pipeline.make_dataset, PIL.Image.open = make_dataset, image_open
    streamed, opened = counts["streamed"], counts["opened"]
    cold, images = inference_seconds(cfg, fold, on)
    warm, _ = inference_seconds(cfg, fold, on)
    return {
        "seconds": seconds,
        "fold_images": images,
        "streamed": streamed,
        "opened": opened,
        "inference_cold": cold,
        "inference_warm": warm,
        "parts": parts.parts,
    }


def spread(values: list[float], digits: int = 1) -> str:
    """median [min, max]"""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}, {max(values):.{digits}f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--methods", default=DEMO_METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--on", default=None, help="audit every image of this dataset instead")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config override"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.child:
        found = child(args.config, args.fold, methods, args.on, args.set)
        print("RESULT " + json.dumps(found))
        return
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    results = []
    for repeat in range(args.repeats):
        command = [sys.executable, __file__, "--child", "--config", args.config]
        command += ["--fold", str(args.fold), "--methods", args.methods]
        command += ["--on", args.on] if args.on else []
        command += [f"--set={override}" for override in args.set]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"repeat {repeat + 1} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
        r = results[-1]
        print(
            f"round {repeat + 1}: audit {r['seconds']:.1f} s, inference {r['inference_warm']:.2f} s"
            f" warm ({r['inference_cold']:.2f} s cold): {r['seconds'] / r['inference_warm']:.1f}x; "
            f"the fold ({r['fold_images']} images) streamed "
            f"{r['streamed'] / r['fold_images']:.2f} times, "
            f"{r['opened'] / r['fold_images']:.2f} Pillow opens per image"
        )
    ratios = [r["seconds"] / r["inference_warm"] for r in results]
    print(
        f"{len(results)} rounds, {', '.join(methods)}, {' '.join(args.set) or 'config as is'}, "
        f"{results[0]['fold_images']} images: audit "
        f"{spread([r['seconds'] for r in results])} s, warm inference "
        f"{spread([r['inference_warm'] for r in results], 2)} s, ratio {spread(ratios)}x "
        "(median [min, max])"
    )
    for name in results[0]["parts"]:
        print(f"  {name}: {spread([r['parts'].get(name, 0.0) for r in results])} s")


if __name__ == "__main__":
    main()
