"""runs/<experiment>/CLAIM.md: the reporting checklist a medical-imaging AI paper is reviewed
against, filled in from the run's files where they can answer, each answer with the file it came
from; the items only the author can answer are listed as such.

Edition and numbering: CLAIM, the Checklist for Artificial Intelligence in Medical Imaging
(Mongan, Moy, Kahn; Radiology: Artificial Intelligence 2020), items 1-42. Its 2024 update
keeps these topics under a new numbering that could not be checked where this was written, so
the 2020 numbers are used; match them to the 2024 form by topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxr.card import estimate, md, read_json
from cxr.config import Config, load_config
from cxr.data.dataset import METADATA_FILE
from cxr.data.labels import known_patients, patient_keys
from cxr.findings import Findings
from cxr.results.records import num
from cxr.runs import (
    AUDIT_FILES,
    EXPERIMENT_FILES,
    command_dir,
    experiment_dir,
    fold_run,
    trained_folds,
)
from cxr.tables import read_csv

AUTHOR = "for the author"
# (number, section, topic) of every CLAIM 2020 item
ITEMS = [
    (1, "Title", "AI methodology and its category named in the title"),
    (2, "Abstract", "structured summary of design, methods, results and conclusions"),
    (3, "Introduction", "scientific and clinical background, intended use of the AI"),
    (4, "Introduction", "study objectives and hypotheses"),
    (5, "Study design", "prospective or retrospective"),
    (6, "Study design", "study goal (model creation, feasibility, non-inferiority...)"),
    (7, "Data", "data sources"),
    (8, "Data", "eligibility criteria: how, where and when cases were identified"),
    (9, "Data", "data pre-processing steps"),
    (10, "Data", "selection of data subsets"),
    (11, "Data", "definitions of data elements"),
    (12, "Data", "de-identification methods"),
    (13, "Data", "how missing data were handled"),
    (14, "Ground truth", "definition of the reference standard"),
    (15, "Ground truth", "rationale for the reference standard"),
    (16, "Ground truth", "source of annotations, annotators' qualifications"),
    (17, "Ground truth", "annotation tools"),
    (18, "Ground truth", "inter- and intra-rater variability"),
    (19, "Data partitions", "intended sample size and how it was determined"),
    (20, "Data partitions", "how data were assigned to partitions, proportions"),
    (21, "Data partitions", "level at which partitions are disjoint"),
    (22, "Model", "model: inputs, outputs, layers"),
    (23, "Model", "software libraries, frameworks and packages"),
    (24, "Model", "initialisation of model parameters"),
    (25, "Training", "training approach: augmentation, hyperparameters, models trained"),
    (26, "Training", "selection of the final model"),
    (27, "Training", "ensembling"),
    (28, "Evaluation", "metrics of model performance"),
    (29, "Evaluation", "statistical measures of significance and uncertainty"),
    (30, "Evaluation", "robustness or sensitivity analysis"),
    (31, "Evaluation", "explainability methods and how they were validated"),
    (32, "Evaluation", "validation or testing on external data"),
    (33, "Results", "flow of cases, inclusions and exclusions"),
    (34, "Results", "demographic and clinical characteristics per partition"),
    (35, "Results", "performance on all data partitions"),
    (36, "Results", "diagnostic accuracy with its precision (95% intervals)"),
    (37, "Results", "failure analysis of incorrectly classified cases"),
    (38, "Discussion", "limitations: bias, uncertainty, generalisability"),
    (39, "Discussion", "implications for practice, intended use"),
    (40, "Other", "registration number and registry"),
    (41, "Other", "where the full protocol (code, data) can be accessed"),
    (42, "Other", "funding and other support"),
]


@dataclass(frozen=True)
class Answer:
    text: str  # what the run's files say
    source: str  # the file(s) it came from, relative to runs/<experiment>/ or the dataset


def answers(cfg: Config, findings: Findings) -> dict[int, Answer]:
    """Item number -> what the run's files and findings answer (only the items they can)."""
    folds = trained_folds(cfg)
    root = experiment_dir(cfg)
    first = fold_run(cfg, folds[0])
    trained = load_config(first.config)
    data, model, train = trained.data, trained.model, trained.train
    info = read_json(data.dataset_dir / METADATA_FILE) or {}
    dataset = f"data/{data.dataset}/{METADATA_FILE}"
    found: dict[int, Answer] = {}
    classes = ", ".join(f"{md(k)} {md(v)}" for k, v in (info.get("classes") or {}).items())
    found[7] = Answer(
        f"dataset {md(data.dataset)} from source {md(info.get('source', 'unknown'))} "
        f"(task {md(info.get('task'))}), {info.get('images', '?')} images",
        dataset,
    )
    found[9] = Answer(
        "decoded to grey, "
        + (
            f"cropped to the lung fields' box (margin {data.crop_margin:g} of the film's side), "
            if data.crop == "lungs"
            else ""
        )
        + f"resized to {data.image_size} x {data.image_size} px, "
        f"{data.channels} channel(s); pixel scaling inside the model"
        + (
            f"; outside the lungs and mediastinum: {data.outside_lungs}"
            if data.outside_lungs != "keep"
            else ""
        ),
        f"fold{folds[0]}/config.yaml",
    )
    found[10] = Answer(
        f"{info.get('images', '?')} images kept, {info.get('skipped', 0)} skipped at import "
        "(unreadable or refused)",
        dataset,
    )
    found[11] = Answer(
        f"classes and counts: {classes}"
        + ("; multi-label findings" if info.get("multi_label") else "; one label per image"),
        dataset,
    )
    splits = [read_csv(fold_run(cfg, k).split, dtype=str, keep_default_na=False) for k in folds]
    shared = []
    for split in splits:
        patients = patient_keys(split)
        train_ids = set(patients[split["split"].to_numpy() == "train"])
        shared.append(len(train_ids & set(patients[split["split"].to_numpy() == "validation"])))
    named = (known_patients(splits[0]["patient_id"]) != "").mean()
    found[13] = Answer(
        f"patient ids known for {num(named, '.0%')} of the images (an "
        "image without one counts as its own patient); unreadable images skipped at import",
        f"fold{folds[0]}/split.csv, {dataset}",
    )
    found[14] = Answer(
        f"the labels as the source gives them ({md(info.get('source', 'unknown'))}); cxr does "
        "not re-read them",
        dataset,
    )
    found[19] = Answer(
        f"{len(splits[0])} images, {len(set(patient_keys(splits[0])))} patients (how the size "
        "was determined: for the author)",
        f"fold{folds[0]}/split.csv",
    )
    found[20] = Answer(
        f"{info.get('folds', '?')}-fold cross-validation, folds stratified by label and grouped "
        f"by patient (seed {info.get('seed', '?')}); trained folds {', '.join(map(str, folds))}, "
        "each validated on its own fold, "
        + "; ".join(
            f"fold {k}: {(s['split'] == 'train').sum()} training, "
            f"{(s['split'] == 'validation').sum()} validation"
            for k, s in zip(folds, splits, strict=True)
        ),
        "fold<K>/split.csv",
    )
    found[21] = Answer(
        "patient: no patient has images in both the training and the validation split of a "
        f"fold (checked: {sum(shared)} shared)",
        "fold<K>/split.csv",
    )
    found[22] = Answer(
        f"`{model.name}`, widths {model.widths or 'default'}; input {data.image_size} px, "
        f"{data.channels} channel(s); outputs: "
        + (
            "one sigmoid per finding"
            if data.multi_label
            else "class logits (softmax, or one sigmoid for two classes)"
        ),
        f"fold{folds[0]}/config.yaml, fold{folds[0]}/model.keras (cxr.json)",
    )
    p = read_json(first.provenance)
    if p:
        found[23] = Answer(
            f"cxr {md(p.get('cxr'))}, Python {md(p.get('python'))}, TensorFlow "
            f"{md(p.get('tensorflow'))}, Keras {md(p.get('keras'))}, NumPy {md(p.get('numpy'))}",
            f"fold{folds[0]}/provenance.json",
        )
        found[41] = Answer(
            "cxr "
            + md(p.get("cxr"))
            + (f" at git {md(p['git_commit'])}" if p.get("git_commit") else "")
            + f"; config sha256 `{p['config_sha256'][:16]}`; the run folder holds the config "
            "(where the code and data are published: for the author)",
            f"fold{folds[0]}/provenance.json",
        )
    found[24] = Answer(md(model.weights or "random initialisation"), f"fold{folds[0]}/config.yaml")
    found[25] = Answer(
        f"up to {train.epochs} epochs, batch {train.batch_size}, Adam {train.learning_rate:g}, "
        f"schedule {train.lr_schedule}, class weights {train.class_weights}, horizontal flips "
        f"{train.flip}, border erasing p = {train.erase_border}; {len(folds)} model(s), one per "
        "fold",
        f"fold{folds[0]}/config.yaml",
    )
    best = [read_json(fold_run(cfg, k).summary) or {} for k in folds]
    found[26] = Answer(
        f"per fold, the epoch with the best {train.monitor}: "
        + ", ".join(
            f"fold {k} epoch {b.get('best_epoch', '?')} ({num(b.get('best_value'))})"
            for k, b in zip(folds, best, strict=True)
        ),
        "fold<K>/summary.json",
    )
    found[27] = Answer("none: each fold's model is reported on its own fold", "fold<K>/")
    report = findings.evaluation
    if report:
        pooled = report.pooled
        names = ["roc_auc", "sensitivity", "specificity", "precision", "f1", "accuracy"]
        found[28] = Answer(
            ", ".join(names) + "; calibration (expected calibration error, Brier score)",
            "evaluation/metrics.json",
        )
        found[29] = Answer(
            "95% intervals from a bootstrap that resamples patients, per fold and pooled",
            "evaluation/metrics.json",
        )
        found[35] = Answer(
            "; ".join(
                f"fold {k}: roc_auc {estimate(m, 'roc_auc')}" for k, m in report.per_fold.items()
            )
            + f"; pooled: roc_auc {estimate(pooled, 'roc_auc')}",
            "evaluation/metrics.json",
        )
        found[36] = Answer(
            ", ".join(f"{n} {estimate(pooled, n)}" for n in names if n != "roc_auc")
            + f" (pooled, {pooled.n} images)",
            "evaluation/metrics.json",
        )
    subgroups = bool(report and report.pooled.subgroups)
    externals = findings.external
    if subgroups or externals:
        found[30] = Answer(
            ("subgroup metrics; " if subgroups else "")
            + (f"{len(externals)} external dataset(s)" if externals else ""),
            "evaluation/subgroups.csv, external/",
        )
    found[32] = Answer(
        ", ".join(md(e.dataset) for e in externals)
        if externals
        else "none: every figure comes from the training source",
        "external/<dataset>/metrics.json",
    )
    explained = findings.explained.items()
    audited = [k for k in folds if (command_dir(root, "audit", k) / AUDIT_FILES.summary).is_file()]
    if explained:
        found[31] = Answer(
            ", ".join(f"fold {k}: {md(s.method)}" for k, s in explained)
            + (
                "; validated by the audit (pointing game against boxes, randomisation sanity "
                "check, deletion/insertion and ROAD, shortcut regions and interventions) for "
                f"fold(s) {', '.join(map(str, audited))}"
                if audited
                else "; not validated yet (`cxr audit`)"
            ),
            "explain/fold<K>/summary.json, audit/fold<K>/summary.json",
        )
        found[37] = Answer(
            "; ".join(
                f"fold {k}: {s.wrong} wrong of {s.rows}, each with its "
                "map (explain/fold{k}/wrong/ and the review page)".replace("{k}", str(k))
                for k, s in explained
            ),
            "explain/fold<K>/summary.json",
        )
    found[33] = Answer(
        f"{info.get('images', '?')} images imported, {info.get('skipped', 0)} skipped; "
        + "; ".join(
            f"fold {k}: {len(s)} images in the split" for k, s in zip(folds, splits, strict=True)
        )
        + " (a diagram: for the author)",
        f"{dataset}, fold<K>/split.csv",
    )
    found[38] = Answer(
        "see the model card's 'Limitations cxr can know'; the rest is for the author",
        EXPERIMENT_FILES.card,
    )
    return found


def claim_markdown(cfg: Config, findings: Findings) -> str:
    filled = answers(cfg, findings)
    lines = [
        f"# CLAIM checklist: {md(cfg.experiment.name)}",
        "",
        "CLAIM (Checklist for Artificial Intelligence in Medical Imaging), 2020 edition and "
        "numbering (items 1-42); the 2024 update keeps these topics under its own numbers. "
        "Answers come from the run's files (the source column, relative to this folder or to "
        f"the dataset); '{AUTHOR}' marks what only the author can say. Written by cxr each "
        "time the model card is.",
        "",
        f"{len(filled)} of {len(ITEMS)} items answered from the run; {len(ITEMS) - len(filled)} "
        "for the author.",
        "",
        "| item | section | topic | from the run | source |",
        "| --- | --- | --- | --- | --- |",
    ]
    for number, section, topic in ITEMS:
        answer = filled.get(number)
        lines.append(
            f"| {number} | {section} | {topic} | {answer.text if answer else AUTHOR} | "
            f"{'`' + answer.source + '`' if answer else ''} |"
        )
    return "\n".join(lines) + "\n"


def claim_path(cfg: Config) -> Path:
    return experiment_dir(cfg) / EXPERIMENT_FILES.claim
