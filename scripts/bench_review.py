"""How fast the review page opens and filters a 10,000-image fold in headless Chromium.

Writes a synthetic fold (10,000 report rows, one small JPEG overlay and film each, two classes,
fold agreement and audit verdicts) with cxr's own writer, opens its page through Playwright and
prints, over three rounds: the time from navigation to the first tiles drawn, and the time of
each filter and sort (the page's handler, measured inside the page with performance.now()).

    .venv/bin/python scripts/bench_review.py [--rows 10000] [--chromium /usr/bin/chromium]
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

from cxr.explain.review import write_review

REGIONS = ["lung", "between", "above", "below", "beside", "border", "top_left"]


def synthetic_fold(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    classes = ["normal", "pneumonia"]
    truth = rng.integers(0, 2, n)
    p = np.clip(truth * 0.6 + rng.normal(0.2, 0.25, n), 0.001, 0.999)
    called = (p > 0.5).astype(int)
    images = [f"images/img{i:05d}.png" for i in range(n)]
    for sub in ("right", "wrong", "films"):
        (folder / sub).mkdir(parents=True)
    tile = Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8))
    correct = np.where(truth == called, "right", "wrong")
    for i in range(n):
        tile.save(folder / correct[i] / f"img{i:05d}.jpg", quality=70)
        tile.save(folder / "films" / f"img{i:05d}.jpg", quality=70)
    outcome = np.select(
        [(truth == 1) & (called == 1), (truth == 0) & (called == 1), truth == 0],
        ["TP", "FP", "TN"],
        "FN",
    )
    report = pd.DataFrame(
        {
            "fold": 0,
            "image": images,
            "patient_id": [f"P{i // 2}" for i in range(n)],
            "true_class": np.array(classes)[truth],
            "predicted_class": np.array(classes)[called],
            "confidence": np.where(called == 1, p, 1 - p),
            "correct": correct,
            "outcome": outcome,
            "prob_normal": 1 - p,
            "prob_pneumonia": p,
            "method": "gradcam",
            "target_class": np.array(classes)[called],
            "peak_x": rng.integers(0, 96, n),
            "peak_y": rng.integers(0, 96, n),
            "peak_region": rng.choice(REGIONS, n),
            "outside_lungs": rng.random(n),
            "overlay": [f"{c}/img{i:05d}.jpg" for i, c in enumerate(correct)],
            "film": [f"films/img{i:05d}.jpg" for i in range(n)],
        }
    )
    table = pd.DataFrame({"image": images, "width": 96, "height": 96, "boxes": ""})
    verdicts = pd.DataFrame({"image": images, "flagged": rng.random(n) < 0.1})
    agreement = pd.DataFrame(
        {
            "image": images,
            "target_class": report["target_class"],
            "mean_rank_correlation": rng.uniform(-0.2, 1, n),
        }
    )
    write_review(folder, report, table, classes, None, verdicts, agreement)


STEPS = [
    ("outcome FN", "#f-outcome", "FN"),
    ("true class pneumonia", "#f-true", "pneumonia"),
    ("peak region top_left", "#f-region", "top_left"),
    ("audit flagged", "#f-audit", "flagged"),
    ("sort by confidence", "#f-sort", "confidence-asc"),
    ("sort by disagreement", "#f-sort", "disagreement"),
]
TIMED = """([selector, value]) => {
  const e = document.querySelector(selector);
  e.value = value;
  const t = performance.now();
  e.dispatchEvent(new Event('change'));
  return performance.now() - t;
}"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fold0"
        started = time.perf_counter()
        synthetic_fold(folder, args.rows)
        size = (folder / "review.js").stat().st_size
        print(
            f"{args.rows} rows written in {time.perf_counter() - started:.1f} s "
            f"(review.js {size / 1e6:.1f} MB)"
        )
        timings: dict[str, list[float]] = {"open (navigation to tiles drawn)": []}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium)
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                started = time.perf_counter()
                page.goto((folder / "index.html").as_uri())
                page.wait_for_function(
                    f"document.getElementById('count').textContent === '{args.rows}' && "
                    "document.querySelectorAll('#grid .tile').length > 0"
                )
                timings["open (navigation to tiles drawn)"].append(
                    (time.perf_counter() - started) * 1000
                )
                for name, selector, value in STEPS:
                    ms = page.evaluate(TIMED, [selector, value])
                    timings.setdefault(name, []).append(ms)
                    if not name.startswith("sort"):
                        page.click("#reset")
                page.close()
            browser.close()
        for name, values in timings.items():
            print(
                f"{name:36s} median {statistics.median(values):7.1f} ms  "
                f"range {min(values):.1f}-{max(values):.1f} ms"
            )


if __name__ == "__main__":
    main()
