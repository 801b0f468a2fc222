"""Adebayo et al. (2018)'s second sanity check, data randomisation: train a copy of a fold's
model, with the same config, initial weights and epochs, on its training images with their labels
permuted, and compare that copy's maps of the audit's sample with the real model's. A model
trained on permuted labels has learnt nothing about the task: maps that survive the permutation
(a high rank correlation and SSIM with the real model's) explain the image, not the decision.

Opt-in (`cxr audit --data-randomisation`): it costs one more training per fold. Written to
audit/fold<K>/data_randomisation.csv (per image and method) and data_randomisation.json.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import tensorflow as tf
from skimage.metrics import structural_similarity

from cxr.atomic import write_json_atomic
from cxr.audit.sanity import SANITY_PASS
from cxr.catalogs.methods import method_parameters
from cxr.config import Config
from cxr.data.labels import read_labels
from cxr.data.pipeline import fold_dataset
from cxr.explain.methods import explain_batch
from cxr.explain.probe import make_probe
from cxr.findings import read_record
from cxr.models.fusing import fuse_batch_norm
from cxr.results.audit import AuditSummary, DataCheck, DataRandomisation
from cxr.results.records import to_json
from cxr.runs import AUDIT_FILES
from cxr.stats import ranked, ranked_correlation
from cxr.tables import write_csv
from cxr.train import prepare_fit
from cxr.trained import TrainedFold

log = logging.getLogger(__name__)
SALT = 0xDA7A  # the permutation's seed, beside the experiment's seed and the fold


def permuted_labels(labels: pd.Series, seed: list[int]) -> pd.Series:
    """The same labels in a seeded random order (the class counts stay)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return pd.Series(labels.to_numpy()[order], index=labels.index)


def data_randomisation(cfg: Config, fold: int, methods: list[str]) -> DataRandomisation:
    trained = TrainedFold.open(cfg, fold)
    settings, classes, layer = trained.settings, trained.classes, trained.layer
    split = trained.run.read_split()
    table = read_labels(settings.data.dataset_dir)
    train_table = table[table["image"].isin(split.loc[split["split"] == "train", "image"])]
    train_table = train_table.reset_index(drop=True)
    seed = [settings.experiment.seed, fold, SALT]
    shuffled = train_table.assign(label=permuted_labels(train_table["label"], seed))
    changed = float((shuffled["label"] != train_table["label"]).mean())
    validation = trained.table()
    log.info(
        "fold %d: training a copy on permuted labels (%d images, %.0f%% relabelled, %d epochs)",
        fold,
        len(shuffled),
        100 * changed,
        settings.train.epochs,
    )
    fit = prepare_fit(settings, tf.distribute.get_strategy(), classes, shuffled, validation)
    fit.model.fit(
        fit.train_ds,
        epochs=settings.train.epochs,
        class_weight=fit.class_weight,
        shuffle=False,  # the pipeline shuffles itself, reproducibly
        verbose=0,
    )
    sample = sample_table(trained, validation)
    images, labels = zip(*fold_dataset(settings, sample, classes, trained.batch_size), strict=True)
    images = np.concatenate([batch.numpy() for batch in images])
    truth = np.concatenate([batch.numpy() for batch in labels])
    targets = truth.argmax(axis=1) if truth.ndim == 2 else truth
    parameters = method_parameters(settings.explain)
    multi_label = settings.data.multi_label
    real = make_probe(
        fuse_batch_norm(trained.run.load_model(), keep=[layer]),
        layer,
        parameters=parameters,
        multi_label=multi_label,
    )
    permuted = make_probe(fit.model, layer, parameters=parameters, multi_label=multi_label)
    rows, maps = [], {}
    for method in methods:
        a = explain_batch(real, images, targets, method).maps
        b = explain_batch(permuted, images, targets, method).maps
        maps[method] = (a, b)
        for name, x, y in zip(sample["image"], a, b, strict=True):
            rows.append(
                {
                    "image": name,
                    "method": method,
                    "spearman": ranked_correlation(ranked(x), ranked(y)),
                    "ssim": float(structural_similarity(x, y, data_range=1.0)),
                }
            )
    frame = pd.DataFrame(rows)
    checks = {
        method: DataCheck(
            images=len(part),
            spearman=float(part["spearman"].mean()),
            ssim=float(part["ssim"].mean()),
            passes=bool(part["spearman"].mean() < SANITY_PASS),
        )
        for method, part in frame.groupby("method", sort=False)
    }
    result = DataRandomisation(
        fold, settings.train.epochs, changed, SANITY_PASS, checks, frame, maps
    )
    folder = trained.folder("audit")
    write_csv(frame, folder / AUDIT_FILES.data_randomisation)
    write_json_atomic(folder / AUDIT_FILES.data_randomisation_summary, to_json(result))
    return result


def sample_table(trained: TrainedFold, validation: pd.DataFrame) -> pd.DataFrame:
    """The audit's sample of the fold (audit/fold<K>/summary.json), else its first audit.sample
    images."""
    summary = read_record(AuditSummary, trained.folder("audit") / AUDIT_FILES.summary)
    names = summary.sample if summary else []  # none: never audited, or its summary is damaged
    chosen = (
        validation[validation["image"].isin(names)]
        if names
        else validation.head(trained.settings.audit.sample)
    )
    return chosen.reset_index(drop=True)
