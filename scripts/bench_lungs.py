"""`cxr lungs` beside the U-Net's own batched inference on the same films, in interleaved rounds.

Each round makes a fresh dataset of N films (the 40 NIH films of tests/fixtures, repeated, at
--size px), then times, in this one process and in turn: the U-Net's forward pass alone on the
films already decoded and squashed to its input (the ceiling: batches of --batch), and the whole
`compute_lungs` (decode, squash, predict, upsample, threshold, the plausibility check, PNG writes
and labels.csv). It prints each one's images/s per round, and the ratio compute_lungs / inference
with its median and range.

    .venv/bin/python scripts/bench_lungs.py [--images 512] [--size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr.lungs.model import forward, load_lung_model, to_input
from cxr.lungs.run import compute_lungs

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nih-cxr14-mini"


def make_dataset(folder: Path, n: int, size: int) -> list[np.ndarray]:
    """n films in the standard layout (labels.csv without lung fields); returns their pixels."""
    sources = sorted((FIXTURE / "images").glob("*.png"))
    (folder / "images").mkdir(parents=True)
    films, rows = [], []
    for i in range(n):
        film = Image.open(sources[i % len(sources)]).convert("L").resize((size, size))
        film.save(folder / "images" / f"f{i:05d}.png")
        films.append(np.asarray(film))
        rows.append(
            {
                "image": f"images/f{i:05d}.png",
                "label": "x",
                "patient_id": f"P{i}",
                "fold": i % 5,
                "boxes": "[]",
                "width": size,
                "height": size,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return films


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = load_lung_model()
    rates: dict[str, list[float]] = {"inference": [], "cxr lungs": []}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "films"
        films = make_dataset(folder, args.images, args.size)
        ready = to_input(films, model.input_shape[1])
        compute_lungs(folder, batch_size=args.batch)  # warm: traced once, like a second dataset
        for _ in range(args.rounds):
            start = time.perf_counter()
            for k in range(0, len(ready), args.batch):
                forward(model)(ready[k : k + args.batch]).numpy()
            inference = args.images / (time.perf_counter() - start)
            shutil.rmtree(folder / "lungs", ignore_errors=True)
            start = time.perf_counter()
            compute_lungs(folder, overwrite=True, batch_size=args.batch)
            whole = args.images / (time.perf_counter() - start)
            rates["inference"].append(inference)
            rates["cxr lungs"].append(whole)
            ratios.append(whole / inference)
            print(
                f"round: inference {inference:.1f} images/s, cxr lungs {whole:.1f} images/s, "
                f"ratio {whole / inference:.2f}"
            )
    for name, values in rates.items():
        print(
            f"{name:10s} median {statistics.median(values):7.1f} images/s "
            f"[{min(values):.1f}, {max(values):.1f}]"
        )
    print(
        f"ratio cxr lungs / inference: median {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}, {max(ratios):.2f}] ({args.images} films at {args.size} px)"
    )


if __name__ == "__main__":
    main()
