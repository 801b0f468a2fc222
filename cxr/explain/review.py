"""The review page of a fold: `index.html` (a static page shipped with cxr, the same for every
fold) and `review.js` beside it, the fold's data as one JSON object.

The data is a script (`window.CXR_REVIEW = {...};`) rather than a .json file because browsers
refuse fetch() on pages opened from disk, and the page must open from a folder or a USB stick
with no server. Every value from the data is placed with textContent or as an attribute by the
page's own script, so names that look like HTML stay text.

explain writes it with the report; the audit writes it again with its per-image verdicts, so a
fold's page can be filtered to the images the audit flagged.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from cxr.atomic import json_ready, write_text_atomic
from cxr.data.labels import decode_boxes
from cxr.findings import read_record
from cxr.results.audit import AuditSummary
from cxr.runs import AUDIT_FILES, EXPLAIN_FILES, REVIEW_PAGE
from cxr.tables import read_csv

# the report's numbers the filters and sorts use; the detail view shows every column
NUMBERS = ("confidence", "outside_lungs")


def page_template() -> str:
    """The page itself: HTML, CSS and script in one file (cxr/explain/assets/review.html)."""
    return resources.files("cxr.explain").joinpath("assets/review.html").read_text("utf-8")


def number(value: object) -> float | None:
    """A float, or None for a missing or undefined value (JSON null)."""
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) or math.isinf(result) else result


def text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def review_rows(
    report: pd.DataFrame,
    table: pd.DataFrame,
    classes: list[str],
    audit: pd.DataFrame | None = None,
    agreement: pd.DataFrame | None = None,
    methods: dict[str, list[list[str]]] | None = None,
) -> list[dict]:
    """One entry per report row: what the tiles, filters, sorts and the detail view need.

    `table` is the fold's labels (sizes, boxes); `audit` the audit's per-image rows
    (shortcuts.csv: `image`, `flagged`); `agreement` fold_agreement.csv (`image`,
    `target_class`, `mean_rank_correlation`); `methods` image -> [[method, href], ...]: other
    maps of the image to show side by side. Images the audit did not see have `audit_flagged`
    null; the page's audit filter leaves them out of both choices.
    """
    info = table.drop_duplicates("image").set_index("image")
    flagged = {} if audit is None else dict(zip(audit["image"], audit["flagged"], strict=True))
    agree = (
        {}
        if agreement is None
        else {
            (r.image, r.target_class): r.mean_rank_correlation
            for r in agreement.itertuples(index=False)
        }
    )
    rows = []
    for record in report.to_dict("records"):
        image = str(record["image"])
        known = info.loc[image] if image in info.index else pd.Series(dtype=object)
        was_flagged = flagged.get(image)
        rows.append(
            {
                "image": image,
                "patient_id": text(record.get("patient_id")),
                "true_class": text(record.get("true_class")),
                "predicted_class": text(record.get("predicted_class")),
                "target_class": text(record.get("target_class")),
                "correct": text(record.get("correct")),
                "outcome": text(record.get("outcome")),
                "peak_region": text(record.get("peak_region")),
                **{k: number(record.get(k)) for k in NUMBERS},
                "probabilities": {
                    c: p for c in classes if (p := number(record.get(f"prob_{c}"))) is not None
                },
                "overlay": quote(str(record["overlay"])),
                "film": quote(str(record["film"])) if text(record.get("film")) else "",
                "width": number(known.get("width")) or 0,
                "height": number(known.get("height")) or 0,
                "boxes": [[b.x, b.y, b.w, b.h] for b in decode_boxes(known.get("boxes"))],
                "audit_flagged": None if was_flagged is None else str(was_flagged) == "True",
                "agreement": number(agree.get((image, record.get("target_class")))),
                "methods": (methods or {}).get(image, []),
                "report": [text(v) for v in record.values()],  # in `columns` order
            }
        )
    return rows


def review_data(
    rows: list[dict],
    columns: list[str],
    classes: list[str],
    title: str,
    about: str,
    links: list[tuple[str, str]],
) -> dict:
    return {
        "title": title,
        "columns": columns,  # of each row's `report` values, written once
        "about": about,
        "links": [list(link) for link in links],
        "classes": list(classes),
        "rows": rows,
        "audited": any(r["audit_flagged"] is not None for r in rows),
        "agreement": any(r["agreement"] is not None for r in rows),
        "lungs": any(r["outside_lungs"] is not None for r in rows),
    }


def as_script(data: dict) -> str:
    """`window.CXR_REVIEW = {...};` with every '<' escaped, so no value can end a script tag
    even if the file is ever inlined."""
    body = json.dumps(json_ready(data), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return "window.CXR_REVIEW = " + body.replace("<", "\\u003c") + ";\n"


def write_review(
    folder: Path,
    report: pd.DataFrame,
    table: pd.DataFrame,
    classes: list[str],
    links: dict[str, Path] | None = None,
    audit: pd.DataFrame | None = None,
    agreement: pd.DataFrame | None = None,
    methods: dict[str, list[list[str]]] | None = None,
    title: str | None = None,
) -> Path:
    """Write `review.js` then `index.html` into `folder` (each whole or not at all); `links`
    (text -> path) become relative links in the page's header. Returns the page's path."""
    method = text(report["method"].iloc[0]) if len(report) and "method" in report else ""
    rows = review_rows(report, table, classes, audit, agreement, methods)
    right = sum(r["correct"] == "right" for r in rows)
    about = (
        f"{len(rows)} maps ({method}), {right} right and {len(rows) - right} wrong; "
        f"classes: {', '.join(classes)}. Click a tile for the film, its map and the report row; "
        "arrows move, Esc closes."
    )
    hrefs = [
        (name, quote(os.path.relpath(path, folder)))
        for name, path in (links or {}).items()
        if path.exists()
    ]
    fold = text(report["fold"].iloc[0]) if len(report) and "fold" in report else ""
    title = title or f"cxr review: fold {fold}"
    data = review_data(rows, [str(c) for c in report.columns], classes, title, about, hrefs)
    write_text_atomic(folder / EXPLAIN_FILES.review_data, as_script(data))
    page = folder / REVIEW_PAGE
    write_text_atomic(page, page_template())
    return page


def audit_verdicts(shortcuts: pd.DataFrame, evidence: dict[str, list[str]]) -> pd.DataFrame:
    """Per image the audit saw: flagged when its map lies mostly outside the lungs (the
    shortcut audit's image rule) or its map peaks in a region the intervention audit flagged
    for the class it was called (`evidence`: class -> regions)."""
    if shortcuts.empty:
        return pd.DataFrame({"image": [], "flagged": []})
    on_evidence = [
        str(region) in evidence.get(str(called), [])
        for region, called in zip(
            shortcuts["peak_region"], shortcuts["predicted_class"], strict=True
        )
    ]
    mostly_outside = shortcuts["flagged"].astype(str) == "True"
    return pd.DataFrame(
        {"image": shortcuts["image"], "flagged": mostly_outside.to_numpy() | on_evidence}
    )


def read_audit_verdicts(audit_folder: Path) -> pd.DataFrame | None:
    """The verdicts of the fold's last audit (None when it was never audited)."""
    shortcuts = audit_folder / AUDIT_FILES.shortcuts
    summary = read_record(AuditSummary, audit_folder / AUDIT_FILES.summary)  # None: damaged too
    if not shortcuts.exists() or summary is None:
        return None
    return audit_verdicts(read_csv(shortcuts), summary.flagged_on_evidence)


def write_fold_review(
    explain_folder: Path,
    audit_folder: Path,
    report: pd.DataFrame,
    table: pd.DataFrame,
    classes: list[str],
    links: dict[str, Path],
    verdicts: pd.DataFrame | None = None,
    method_maps: pd.DataFrame | None = None,
) -> Path:
    """A fold's page with what the fold has: its audit's verdicts (`verdicts`, or those of the
    audit on disk), the audit sample's maps by method (`method_maps`, likewise) and its fold
    agreement, when they exist."""
    if verdicts is None:
        verdicts = read_audit_verdicts(audit_folder)
    if method_maps is None and (audit_folder / AUDIT_FILES.method_maps).exists():
        method_maps = read_csv(audit_folder / AUDIT_FILES.method_maps)
    methods: dict[str, list[list[str]]] = {}
    for row in [] if method_maps is None else method_maps.itertuples(index=False):
        href = quote(os.path.relpath(audit_folder / row.overlay, explain_folder))
        methods.setdefault(row.image, []).append([row.method, href])
    agreement_file = explain_folder / EXPLAIN_FILES.fold_agreement
    agreement = read_csv(agreement_file) if agreement_file.exists() else None
    links = {**links, "audit summary": audit_folder / AUDIT_FILES.summary}
    return write_review(explain_folder, report, table, classes, links, verdicts, agreement, methods)
