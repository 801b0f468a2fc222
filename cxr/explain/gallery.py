"""A fold's overlays in one picture: the montage PNG (the review page is cxr.explain.review)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from cxr.data.images import write_png
from cxr.runs import EXPLAIN_FILES

TILE = 160


def taking_turns(part: pd.DataFrame, key: str, n: int, seed: int = 0) -> pd.DataFrame:
    """Up to `n` rows, taking turns between the groups of `key`, each group shuffled with a fixed
    seed: a sample that shows every kind, not the first images in path order."""
    groups = [g.sample(frac=1, random_state=seed) for _, g in part.groupby(key, sort=True)]
    if not groups:
        return part.iloc[:0]
    # each row's turn is its place in its shuffled group; one sort, not a slice per row (which took
    # 0.07 s of a 256-image fold's run)
    turns = np.concatenate([np.arange(len(g)) for g in groups])
    group = np.concatenate([np.full(len(g), k) for k, g in enumerate(groups)])
    order = np.lexsort((group, turns))[:n]
    return pd.concat(groups).iloc[order]


def write_montage(folder: Path, report: pd.DataFrame, per_row: int = 8) -> Path | None:
    """`per_row` right and `per_row` wrong overlays, one row each, captioned; each row takes turns
    between its outcomes (TP and TN, FP and FN; true classes when there are no outcomes)."""
    if report.empty:
        return None
    key = (
        "outcome"
        if report.get("outcome", pd.Series("", dtype=str)).fillna("").astype(bool).any()
        else "true_class"
    )
    rows = [
        taking_turns(report[report["correct"] == kind], key, per_row) for kind in ("right", "wrong")
    ]
    canvas = Image.new("RGB", (per_row * TILE, 2 * (TILE + 16)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for r, (kind, part) in enumerate(zip(("right", "wrong"), rows, strict=True)):
        top = r * (TILE + 16)
        draw.text(
            (4, top + 2), f"{kind}: {int((report['correct'] == kind).sum())}", fill=(255, 255, 255)
        )
        for c, row in enumerate(part.itertuples()):
            tile = Image.open(folder / row.overlay).convert("RGB")
            tile.thumbnail((TILE, TILE))
            canvas.paste(tile, (c * TILE, top + 16))
            caption = f"{row.predicted_class[:12]} {row.confidence:.2f}"
            draw.rectangle(
                [c * TILE, top + 16, c * TILE + 7 * len(caption), top + 28], fill=(0, 0, 0)
            )
            draw.text((c * TILE + 2, top + 16), caption, fill=(255, 255, 0))
    path = folder / EXPLAIN_FILES.montage
    write_png(np.asarray(canvas), path)
    return path
