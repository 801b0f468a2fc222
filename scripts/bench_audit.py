"""Benchmark: the whole `cxr audit` of a trained fold, and how often it reads the fold's images.

Each repeat runs in a fresh process (importing TensorFlow, loading the model and tracing every
method are part of what a user waits for) and times `audit_folds` from the call to its return. It
also counts the images the audit streams through tf.data (every `make_dataset` path) and the image
files it opens with Pillow, each as a multiple of the fold's size: how many times the fold is read.
Needs a trained run: `bash scripts/demo.sh` (or `cxr download synthetic` and `cxr train`) first.

    .venv/bin/python scripts/bench_audit.py [--config configs/synthetic.yaml] [--fold 0] \\
        [--methods gradcam,hirescam,gradcam++,guided_backprop] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEMO_METHODS = "gradcam,hirescam,gradcam++,guided_backprop"


def child(config: str, fold: int, methods: list[str]) -> dict:
    """One audit in this process, with the reads counted."""
    import PIL.Image

    import cxr.data.pipeline as pipeline
    from cxr.audit.run import audit_folds
    from cxr.config import load_config
    from cxr.runs import open_trained_fold

    counts = {"streamed": 0, "opened": 0}
    make_dataset, image_open = pipeline.make_dataset, PIL.Image.open

    def counted_dataset(dataset_dir, table, *args, **kwargs):
        counts["streamed"] += len(table)
        return make_dataset(dataset_dir, table, *args, **kwargs)

    def counted_open(*args, **kwargs):
        counts["opened"] += 1
        return image_open(*args, **kwargs)

    pipeline.make_dataset, PIL.Image.open = counted_dataset, counted_open
    cfg = load_config(config)
    run = open_trained_fold(cfg, fold)
    images = int((run.read_split()["split"] == "validation").sum())
    start = time.perf_counter()
    audit_folds(cfg, [fold], methods)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "fold_images": images, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic.yaml")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--methods", default=DEMO_METHODS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.child:
        print("RESULT " + json.dumps(child(args.config, args.fold, methods)))
        return
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    results = []
    for repeat in range(args.repeats):
        command = [sys.executable, __file__, "--child", "--config", args.config]
        command += ["--fold", str(args.fold), "--methods", args.methods]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"repeat {repeat + 1} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(lines[-1].removeprefix("RESULT ")))
        r = results[-1]
        print(
            f"repeat {repeat + 1}: audit {r['seconds']:.1f} s; the fold ({r['fold_images']} "
            f"images) streamed {r['streamed'] / r['fold_images']:.2f} times, "
            f"{r['opened'] / r['fold_images']:.2f} Pillow opens per image"
        )
    best = min(results, key=lambda r: r["seconds"])
    print(f"best of {len(results)}: {best['seconds']:.1f} s for {len(methods)} methods")


if __name__ == "__main__":
    main()
