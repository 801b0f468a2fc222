"""Benchmark: does `cxr explain` keep its memory flat as the fold grows?

For each size, makes a synthetic dataset (64 px, 2 folds), trains tiny_cnn for one epoch, then runs
`cxr explain` on fold 0 (half the images) in its own process and reads that process's peak resident
memory. Prints images, seconds, images/s and peak MB per size, and the ratio of the peaks.
    .venv/bin/python scripts/bench_explain_memory.py [--sizes 2000 20000]
    # explains 1,000 and 10,000 images
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CXR = [sys.executable, "-m", "cxr.cli"]
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(args: list[str]) -> None:
    subprocess.run(
        CXR + args, check=True, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def peak_of(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident MB) of one command in its own process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        CXR + args, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"command failed: {' '.join(args)}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[2000, 20000],
        help="dataset sizes; half is explained",
    )
    args = parser.parse_args()
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"{'dataset':>8} {'explained':>9} {'seconds':>8} {'img/s':>7} {'peak MB':>8}")
        for n in args.sizes:
            name = f"syn{n}"
            run(
                [
                    "download",
                    "synthetic",
                    "--n",
                    str(n),
                    "--size",
                    "64",
                    "--folds",
                    "2",
                    "--dest",
                    str(root / "data"),
                    "--name",
                    name,
                    "--quiet",
                ]
            )
            config = [
                f"data.root={root / 'data'}",
                f"data.dataset={name}",
                "data.image_size=64",
                "model.name=tiny_cnn",
            ]
            config += [
                "train.epochs=1",
                "train.batch_size=64",
                f"experiment.name={name}",
                f"experiment.output_dir={root / 'runs'}",
            ]
            run(["train", "--config", "configs/synthetic.yaml", *config])
            seconds, peak = peak_of(["explain", "--config", "configs/synthetic.yaml", *config])
            peaks[n] = peak
            print(f"{n:>8} {n // 2:>9} {seconds:>8.1f} {n / 2 / seconds:>7.1f} {peak:>8.0f}")
    first, last = args.sizes[0], args.sizes[-1]
    print(
        f"peak memory, {last // 2} vs {first // 2} explained: {peaks[last] / peaks[first]:.2f}x "
        f"for {last / first:.0f}x the images"
    )


if __name__ == "__main__":
    main()
