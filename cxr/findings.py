"""What an experiment's commands have found so far, as typed records, for the documents that
show it (the model card, the reporting checklist).

A command passes what it has just found in hand; the rest is read from the run folder's files
(metrics.json, summary.json...) that earlier commands wrote, into the same records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cxr.config import Config
from cxr.results.audit import AuditSummary, DataRandomisation
from cxr.results.evaluation import Evaluation, ExternalEvaluation
from cxr.results.explanation import ExplainSummary
from cxr.results.records import from_json
from cxr.runs import (
    AUDIT_FILES,
    EVALUATION_FILES,
    EXPLAIN_FILES,
    command_dir,
    experiment_dir,
    external_dir,
    pooled_evaluation_dir,
)

log = logging.getLogger(__name__)
Record = TypeVar("Record")


@dataclass(frozen=True)
class Findings:
    evaluation: Evaluation | None  # pooled out of fold
    external: list[ExternalEvaluation]  # one per external dataset, by its folder name
    explained: dict[int, ExplainSummary]  # by fold
    audits: list[AuditSummary]  # the pooled audit where there is one, else each fold's
    data_randomisation: dict[int, DataRandomisation]  # by fold


def record_of(kind: type[Record], path: Path) -> Record:
    """The record a file holds; ValueError when it cannot be read as one (damaged, or written by
    an older cxr)."""
    try:
        return from_json(kind, json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError, AssertionError, StopIteration) as exc:
        raise ValueError(f"{path} cannot be read as {kind.__name__} ({exc})") from None


def read_record(kind: type[Record], path: Path) -> Record | None:
    """The record a file holds; None when there is none or it cannot be read as one, with a
    warning for the latter."""
    if not path.is_file():
        return None
    try:
        return record_of(kind, path)
    except (OSError, ValueError) as exc:
        log.warning("%s; left out", exc)
        return None


def given_or_read(
    kind: type[Record], given: dict, folds: list, file: Callable[[Any], Path]
) -> dict[Any, Record]:
    """Each fold's record: the one given, else the one its file holds (folds with neither left
    out)."""
    found = {
        fold: given[fold] if fold in given else read_record(kind, file(fold)) for fold in folds
    }
    return {fold: record for fold, record in found.items() if record is not None}


def read_findings(
    cfg: Config,
    folds: list[int],
    *,
    evaluation: Evaluation | None = None,
    external: ExternalEvaluation | None = None,
    explained: dict[int, ExplainSummary] | None = None,
    audits: dict[int | None, AuditSummary] | None = None,
    data_randomisation: dict[int, DataRandomisation] | None = None,
) -> Findings:
    """The findings of the experiment's trained `folds`: those given, else read from its files."""
    root = experiment_dir(cfg)
    given = {} if external is None else {external.folder.name: external}
    names = [path.parent.name for path in external_dir(cfg).glob(f"*/{EVALUATION_FILES.metrics}")]
    reports = given_or_read(
        ExternalEvaluation,
        given,
        sorted({*names, *given}),
        lambda name: external_dir(cfg, name) / EVALUATION_FILES.metrics,
    )
    found_audits = given_or_read(
        AuditSummary,
        audits or {},
        [None, *folds],
        lambda fold: command_dir(root, "audit", fold) / AUDIT_FILES.summary,
    )
    pooled = found_audits.pop(None, None)
    return Findings(
        evaluation=evaluation
        or read_record(Evaluation, pooled_evaluation_dir(cfg) / EVALUATION_FILES.metrics),
        external=list(reports.values()),
        explained=given_or_read(
            ExplainSummary,
            explained or {},
            folds,
            lambda fold: command_dir(root, "explain", fold) / EXPLAIN_FILES.summary,
        ),
        audits=[pooled] if pooled else list(found_audits.values()),
        data_randomisation=given_or_read(
            DataRandomisation,
            data_randomisation or {},
            folds,
            lambda fold: command_dir(root, "audit", fold) / AUDIT_FILES.data_randomisation_summary,
        ),
    )
