"""The catalog of the scores a fold's audit gives each explanation method (and the baseline
maps): one entry each, naming all that makes it.

To add a score: a function `rows(inputs) -> DataFrame` (one row per image, or stage, and method)
and a `summarise(rows, baseline) -> {method: record}` in its module here, its record class (with
its terminal line, card line and methods.csv columns) and its AuditSummary field in
cxr.results.audit, its rows' file name in runs.AuditFiles, and one entry below. The audit runs
the entries in order, writes each one's rows, summarises them per fold and pooled over folds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cxr.audit.faithfulness import faithfulness_of, summarise_faithfulness
from cxr.audit.inputs import AuditInputs
from cxr.audit.localisation import localisation_of, summarise_localisation
from cxr.audit.mapmetrics import map_metrics_of, summarise_map_metrics
from cxr.audit.road import road_of, summarise_road
from cxr.audit.sanity import pool_sanity, sanity_of, summarise_sanity
from cxr.runs import AUDIT_FILES


@dataclass(frozen=True, kw_only=True)
class ScorePart:
    name: str  # its AuditSummary field (cxr.results.audit), one record per method
    label: str  # in the audit's timing line
    file: str  # its rows in audit/fold<K>/ (runs.AUDIT_FILES)
    rows: Callable[[AuditInputs], pd.DataFrame]
    summarise: Callable[[pd.DataFrame, str], dict[str, Any]]  # (rows, baseline) -> method -> record
    # pooled over folds: from the folds' records (None: summarise every fold's rows together)
    pool: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None


SCORES = [
    ScorePart(
        name="localisation",
        label="localisation",
        file=AUDIT_FILES.localisation,
        rows=localisation_of,
        summarise=lambda rows, baseline: summarise_localisation(rows),
    ),
    ScorePart(
        name="faithfulness",
        label="deletion and insertion",
        file=AUDIT_FILES.faithfulness,
        rows=faithfulness_of,
        summarise=summarise_faithfulness,
    ),
    ScorePart(
        name="sanity",
        label="sanity",
        file=AUDIT_FILES.sanity,
        rows=sanity_of,
        summarise=lambda rows, baseline: summarise_sanity(rows),
        pool=pool_sanity,
    ),
    ScorePart(
        name="maps",
        label="map properties",
        file=AUDIT_FILES.map_metrics,
        rows=map_metrics_of,
        summarise=lambda rows, baseline: summarise_map_metrics(rows),
    ),
    ScorePart(
        name="road",
        label="ROAD",
        file=AUDIT_FILES.road,
        rows=road_of,
        summarise=lambda rows, baseline: summarise_road(rows),
    ),
]
