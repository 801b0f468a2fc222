"""What every command rewrites at its end: the experiment's documents, from the run's files.

MODEL_CARD.md and .html (cxr.card), CLAIM.md (cxr.claim), index.html (links to all of it), and,
for folds trained with `train.tracking: mlflow`, the same sent to their MLflow runs.
"""

from __future__ import annotations

from pathlib import Path

from cxr.atomic import write_text_atomic
from cxr.card import experiment_index, write_model_card
from cxr.claim import claim_markdown, claim_path
from cxr.config import Config
from cxr.runs import EXPERIMENT_FILES, experiment_dir
from cxr.tracking import sync as sync_tracking


def write_documents(cfg: Config) -> Path | None:
    """The model card's path (None before any fold is trained, and then nothing is written)."""
    card = write_model_card(cfg)
    if card is None:
        return None
    write_text_atomic(claim_path(cfg), claim_markdown(cfg))
    write_text_atomic(experiment_dir(cfg) / EXPERIMENT_FILES.index, experiment_index(cfg))
    sync_tracking(cfg)
    return card
