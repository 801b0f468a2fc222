"""Ways to look at a fold's overlays: a montage PNG and a single static HTML page."""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from cxr.atomic import write_text_atomic
from cxr.data.images import write_png

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
    path = folder / "montage.png"
    write_png(np.asarray(canvas), path)
    return path


def write_html(
    folder: Path, report: pd.DataFrame, classes: list[str], card: Path | None = None
) -> Path:
    """One self-contained page with relative links (to the experiment's model card too, when
    `card` is given); every name from the data is escaped."""
    right, wrong = (
        int((report["correct"] == "right").sum()),
        int((report["correct"] == "wrong").sum()),
    )
    head = [
        "image",
        "patient",
        "true",
        "predicted",
        "confidence",
        "right/wrong",
        "target",
        "raw peak",
        "empty",
        "peak region",
    ]
    regions = sorted(
        {str(r) for r in report.get("peak_region", pd.Series(dtype=str)).dropna() if str(r)}
    )
    show = (
        "for (const r of document.querySelectorAll('tr[data-region]')) "
        "r.style.display = (this.value === '' || r.dataset.region === this.value) ? '' : 'none'"
    )
    choose = "".join(f"<option value='{html.escape(r)}'>{html.escape(r)}</option>" for r in regions)
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cxr explanations</title>",
        "<style>body{font-family:sans-serif;background:#111;color:#eee}table{border-collapse:collapse}"
        "td,th{padding:4px 8px;border-bottom:1px solid "
        "#333}img{width:160px}.wrong{color:#f77}.right{color:#7f7}</style>",
        "</head><body>",
        f"<h1>{html.escape(str(report['method'].iloc[0]) if len(report) else '')} "
        "explanations</h1>",
        f"<p>{right} right, {wrong} wrong; classes: {html.escape(', '.join(classes))}</p>",
        ""
        if card is None
        else f"<p><a href='{html.escape(quote(os.path.relpath(card, folder)))}'>model card</a></p>",
        f'<p>map peak: <select onchange="{show}"><option '
        f"value=''>anywhere</option>{choose}</select></p>"
        if regions
        else "",
        "<table><tr><th>overlay</th>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
    ]
    for row in report.itertuples():
        link = html.escape(quote(row.overlay))
        region = (
            "" if pd.isna(getattr(row, "peak_region", "")) else str(getattr(row, "peak_region", ""))
        )
        cells = [
            row.image,
            row.patient_id,
            row.true_class,
            row.predicted_class,
            f"{row.confidence:.3f}",
            row.correct,
            row.target_class,
            f"{row.raw_peak:.3g}",
            "yes" if row.empty else "",
            region,
        ]
        lines.append(
            f"<tr class='{html.escape(row.correct)}' data-region='{html.escape(region)}'>"
            f"<td><a href='{link}'><img src='{link}' loading='lazy'></a></td>"
            + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
            + "</tr>"
        )
    lines.append("</table></body></html>")
    path = folder / "index.html"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
