"""What every command rewrites at its end: the experiment's documents, from what the command
has just found (in hand) and what earlier commands wrote (cxr.findings).

MODEL_CARD.md and .html (cxr.card), CLAIM.md (cxr.claim), index.html (links to all of it), and,
for folds trained with `train.tracking: mlflow`, the same sent to their MLflow runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr.atomic import write_text_atomic
from cxr.card import experiment_index, write_model_card
from cxr.claim import claim_markdown, claim_path
from cxr.config import Config
from cxr.findings import read_findings
from cxr.runs import EXPERIMENT_FILES, experiment_dir, trained_folds
from cxr.tracking import sync as sync_tracking


def write_documents(cfg: Config, **in_hand: Any) -> Path | None:
    """The model card's path (None before any fold is trained, and then nothing is written).
    `in_hand`: what the calling command has just found, by the name of cxr.findings.read_findings'
    keyword (evaluation=, external=, explained=, audits=, data_randomisation=)."""
    folds = trained_folds(cfg)
    if not folds:
        return None
    findings = read_findings(cfg, folds, **in_hand)
    card = write_model_card(cfg, findings)
    write_text_atomic(claim_path(cfg), claim_markdown(cfg, findings))
    write_text_atomic(experiment_dir(cfg) / EXPERIMENT_FILES.index, experiment_index(cfg))
    sync_tracking(cfg)
    return card
