"""MODEL_CARD.md (and .html): what a reviewer needs to judge a trained experiment, in one page.

Written by evaluate, and again by explain and audit; every number is read from the run's own
files (config.yaml, classes.json, split.csv, dataset.json, the metrics, explain and audit
summaries, external reports), never typed in. What has not been run yet is said, with the
command that would run it.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from urllib.parse import quote, urlencode

import markdown

from cxr.atomic import write_text_atomic
from cxr.config import Config, load_config
from cxr.data.dataset import METADATA_FILE
from cxr.data.labels import known_patients, patient_keys
from cxr.findings import Findings
from cxr.results.audit import AuditSummary, DataRandomisation
from cxr.results.evaluation import Evaluation, ExternalEvaluation, Metrics
from cxr.results.records import num
from cxr.runs import (
    AUDIT_FILES,
    EVALUATION_FILES,
    EXPERIMENT_FILES,
    EXPLAIN_FILES,
    REVIEW_PAGE,
    experiment_dir,
    external_dir,
    fold_run,
    pooled_evaluation_dir,
    trained_folds,
)
from cxr.tables import read_csv

Section = tuple[str, list[str]]  # a heading and its lines (markdown: bullets or table rows)
MARKDOWN_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|"}
MARKDOWN_ESCAPES |= {c: "\\" + c for c in "\\`*_[]#"}


def md(value: object) -> str:
    """User text (class names, subgroup values, dataset and file names) as inert Markdown: HTML's
    characters as entities, so a viewer that passes HTML (VS Code, Jupyter, MkDocs, pandoc) shows
    `<svg onload=...>` rather than running it; `|` and emphasis marks escaped, so a value cannot
    break a table or a line's markup; on one line."""
    text = " ".join(str(value).split())
    return "".join(MARKDOWN_ESCAPES.get(c, c) for c in text)


def plain(text: str) -> str:
    """A line of the card's Markdown as the text it shows (the HTML card's title)."""
    return html.unescape(re.sub(r"\\(.)", r"\1", text))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def estimate(metrics: Metrics, name: str) -> str:
    """'0.912 [0.884, 0.937]': a metric with its 95% interval where it has one."""
    value = getattr(metrics, name)
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "undefined"
    text = f"{value:.3f}"
    if name in metrics.ci95:
        low, high = metrics.ci95[name]
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def data_section(cfg: Config, trained: Config, folds: list[int]) -> Section:
    dataset_dir = trained.data.dataset_dir
    info = read_json(dataset_dir / METADATA_FILE) or {}
    split = read_csv(fold_run(cfg, folds[0]).split, dtype=str, keep_default_na=False)
    named = (known_patients(split["patient_id"]) != "").mean()
    lines = [
        f"- Dataset {md(trained.data.dataset)} from source {md(info.get('source', 'unknown'))}"
        + (f" (task {md(info['task'])})" if info.get("task") else "")
        + f", made by cxr {md(info.get('cxr_version', '?'))} on "
        f"{md(info.get('created', '?'))}",
        f"- {len(split)} images, {len(set(patient_keys(split)))} patients, "
        f"{info.get('folds', '?')} folds grouped by patient; classes: "
        + ", ".join(f"{md(k)} {md(v)}" for k, v in (info.get("classes") or {}).items()),
        f"- Trained folds: {', '.join(map(str, folds))}; each validated on its own fold only",
        f"- Patient ids known for {num(named, '.0%')} of the images"
        + ("" if named == 1 else " (an image without one counts as its own patient)"),
    ]
    if info.get("inject_marker") is not None:
        lines.append(f"- A corner marker was burnt in on purpose (p = {info['inject_marker']})")
    return "Data", lines


def model_section(trained: Config) -> Section:
    t = trained.train
    return "Model and training", [
        f"- `{trained.model.name}`, widths {trained.model.widths or 'default'}, weights "
        f"{md(trained.model.weights or 'random initialisation')}; input "
        f"{trained.data.image_size} px, {trained.data.channels} channel(s)",
        f"- {t.epochs} epochs at most, batch {t.batch_size}, Adam {t.learning_rate:g}, schedule "
        f"{t.lr_schedule}, class weights {t.class_weights}, flips {t.flip}, best by {t.monitor}",
        *([f"- Shortcut removal: border erasing p = {t.erase_border}"] if t.erase_border else []),
        *(
            [
                f"- Outside the lungs and mediastinum: {trained.data.outside_lungs} (in training "
                "and every later read of the images)"
            ]
            if trained.data.outside_lungs != "keep"
            else []
        ),
        *(
            [
                f"- Cropped to the lung fields' box, margin {trained.data.crop_margin:g} of the "
                "film's side (in training and every later read; maps drawn back onto the film)"
            ]
            if trained.data.crop == "lungs"
            else []
        ),
    ]


def performance_section(report: Evaluation | None) -> list[Section]:
    if report is None:
        return [("Performance", ["- Not evaluated yet: `cxr evaluate --all-folds`"])]
    pooled = report.pooled
    names = ("roc_auc", "sensitivity", "specificity", "precision", "f1", "accuracy")
    lines = [
        f"Out of fold, pooled over folds {', '.join(map(str, report.folds))} "
        f"({pooled.n} images); 95% intervals resample patients"
        + (f"; positive class {md(pooled.positive_class)}" if pooled.positive_class else ""),
        "",
        "| metric | pooled | per fold (mean ± std) |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {estimate(pooled, name)} | {num(report.mean_std[name].mean)} "
            f"± {num(report.mean_std[name].std)} |"
            for name in names
        ),
    ]
    sections = [("Performance", lines)]
    if pooled.calibration is not None:
        c = pooled.calibration
        sections.append(
            (
                "Calibration",
                [
                    f"- {md(c.of)}: expected calibration error {num(c.ece)} over {c.bins} "
                    f"equal-count bins, Brier score {num(c.brier)} (figure below)"
                ],
            )
        )
    if pooled.operating_points:
        sections.append(
            (
                "Operating points (chosen out of fold)",
                [
                    f"- {name}: sensitivity {num(p.sensitivity)}, specificity {num(p.specificity)}"
                    for name, p in pooled.operating_points.items()
                ],
            )
        )
    if pooled.subgroups:
        sections.append(
            (
                "Subgroups",
                [
                    "| subgroup | images | positives | ROC AUC [95% CI] | below overall |",
                    "| --- | --- | --- | --- | --- |",
                    *(
                        f"| {md(g.column)}={md(g.value)} | {g.images} | {g.positives} | "
                        f"{num(g.roc_auc)} [{num(g.ci95_low)}, {num(g.ci95_high)}] | "
                        f"{'yes' if g.below_overall else 'no'} |"
                        for g in pooled.subgroups
                    ),
                ],
            )
        )
    return sections


def external_section(reports: list[ExternalEvaluation]) -> Section:
    lines = [
        f"- {md(report.dataset)} ({report.ensemble.n} images), fold ensemble of "
        f"{len(report.folds)}: ROC AUC {estimate(report.ensemble, 'roc_auc')}, sensitivity "
        f"{estimate(report.ensemble, 'sensitivity')}, specificity "
        f"{estimate(report.ensemble, 'specificity')}"
        for report in reports
    ]
    return "External validation", lines or [
        "- None yet: the figures above come from one source; `cxr evaluate --on OTHER` tests "
        "another"
    ]


def explanation_section(root: Path, findings: Findings) -> list[Section]:
    lines = []
    for fold, summary in findings.explained.items():
        text = (
            f"- Fold {fold}, {summary.method} at {md(summary.layer)} (target "
            f"{md(summary.target)}): {summary.images} images, {summary.right} of "
            f"{summary.rows} maps right, {summary.empty_maps} empty maps"
        )
        loc = summary.localisation
        if loc:
            text += (
                f"; peak inside the box for {num(loc.peak_in_box, '.0%')} of "
                f"{loc.true_positives_with_boxes} true positives (centre "
                f"{num(loc.centre_baseline, '.0%')}, random "
                f"{num(loc.random_baseline, '.0%')})"
            )
        lines.append(text + f" ([review page](explain/fold{fold}/{REVIEW_PAGE}))")
    audit_lines = [line for found in findings.audits for line in audit_lines_of(found, root)]
    for checked in findings.data_randomisation.values():
        audit_lines += [f"- {line}" for line in data_randomisation_lines(checked)]
    return [
        ("Explanations", lines or ["- Not explained yet: `cxr explain --all-folds`"]),
        ("Audit of the explanations", audit_lines or ["- Not audited yet: `cxr audit`"]),
    ]


def data_randomisation_lines(checked: DataRandomisation) -> list[str]:
    """A fold's data randomisation check (cxr.data_randomisation) as one line per method."""
    return [
        f"fold {checked.fold}, {md(method)}: data randomisation "
        f"{'passes' if c.passes else 'FAILS'} (maps of a copy trained on permuted labels: "
        f"rank correlation {num(c.spearman, '.2f')}, SSIM {num(c.ssim, '.2f')}; must be "
        f"below {checked.pass_below})"
        for method, c in checked.checks.items()
    ]


def review_link(root: Path, fold: object, text: str, **filters: str) -> str:
    """' ([text](explain/fold<K>/index.html#filters))': the fold's review page filtered to the
    images a line is about; empty for a pooled line or a fold never explained."""
    page = Path("explain") / f"fold{fold}" / REVIEW_PAGE
    if fold is None or not (root / page).exists():
        return ""
    return f" ([{text}]({page.as_posix()}#{urlencode(filters, quote_via=quote)}))"


def audit_lines_of(summary: AuditSummary, root: Path) -> list[str]:
    fold = summary.fold
    where = "pooled" if fold is None else f"fold {fold}"
    lines = []
    for scores in summary.scores().values():
        for method, record in scores.items():
            line = record.card_line(method)
            if line is not None:
                lines.append(f"- {where}, {line}")
    shortcuts = summary.shortcuts
    flags = shortcuts.regions.flags if shortcuts.regions else {}
    flagged = "; ".join(
        f"{md(k)}: {', '.join(v)}"
        + review_link(root, fold, "review them", predicted=k, audit="flagged")
        for k, v in flags.items()
    )
    lines.append(
        f"- {where}, shortcuts ({shortcuts.rule} rule): "
        + (
            f"FLAGGED, {flagged or ', '.join(map(md, shortcuts.flagged_classes))}"
            if shortcuts.model_flagged
            else "not flagged"
        )
    )
    if summary.interventions:
        evidence = summary.flagged_on_evidence
        regions = "; ".join(
            f"{md(k)}: "
            + ", ".join(
                region + review_link(root, fold, "maps peaking there", predicted=k, region=region)
                for region in v
            )
            for k, v in evidence.items()
        )
        lines.append(
            f"- {where}, what the decisions depend on (regions filled in turn, against the same "
            f"area in the lungs): {'FLAGGED, ' + regions if evidence else 'not flagged'}"
        )
    return lines


def limitations_section(trained: Config, findings: Findings) -> Section:
    info = read_json(trained.data.dataset_dir / METADATA_FILE) or {}
    lines = []
    if info.get("source") == "synthetic":
        lines.append("- Synthetic phantoms: the figures prove the pipeline, not a clinical model")
    if info.get("source") == "nih-cxr14":
        lines.append("- NIH ChestX-ray14 labels were text-mined from reports: some are wrong")
    if not findings.external:
        lines.append("- One data source and no external validation: performance elsewhere unknown")
    lines.append(
        "- Binary labels per image; no localisation ground truth beyond the boxes the data has"
    )
    return "Limitations cxr can know", lines


def provenance_section(cfg: Config, folds: list[int]) -> Section:
    """Versions and digests from each fold's provenance.json (written by `cxr train`)."""
    lines = []
    found = {fold: read_json(fold_run(cfg, fold).provenance) for fold in folds}
    for fold, p in found.items():
        if p is None:
            lines.append(f"- Fold {fold}: not recorded (trained before cxr wrote provenance.json)")
            continue
        commit = f" (git {md(p['git_commit'])})" if p.get("git_commit") else ""
        gpu = (
            f"CUDA {md(p['cuda'])}, cuDNN {md(p['cudnn'])}, GPU {md(', '.join(p['gpus']))}"
            if p.get("gpus")
            else "no GPU"
            + (f" (TensorFlow built for CUDA {md(p['cuda'])})" if p.get("cuda") else "")
        )
        lines.append(
            f"- Fold {fold}: cxr {md(p.get('cxr'))}{commit}; Python {md(p.get('python'))}, "
            f"TensorFlow {md(p.get('tensorflow'))}, Keras {md(p.get('keras'))}, NumPy "
            f"{md(p.get('numpy'))}; {gpu}; labels.csv sha256 `{p['labels_sha256'][:16]}`, "
            f"config sha256 `{p['config_sha256'][:16]}`"
        )
    return "Versions and provenance", lines


def figures_of(cfg: Config, folds: list[int]) -> list[tuple[str, Path]]:
    """(caption, path below the experiment's folder) of every figure the run has drawn."""
    root = experiment_dir(cfg)
    pooled = pooled_evaluation_dir(cfg).relative_to(root)
    candidates = [
        ("ROC curve, pooled out of fold", pooled / EVALUATION_FILES.roc),
        ("Calibration, pooled out of fold", pooled / EVALUATION_FILES.calibration),
        ("Confusion matrix, pooled out of fold", pooled / EVALUATION_FILES.confusion),
    ]
    for fold in folds:
        candidates += [
            (
                f"Training curves, fold {fold}",
                fold_run(cfg, fold).history_figure.relative_to(root),
            ),
            (
                f"Right and wrong maps, fold {fold}",
                Path("explain") / f"fold{fold}" / EXPLAIN_FILES.montage,
            ),
            (
                f"Methods side by side, fold {fold}",
                Path("audit") / f"fold{fold}" / AUDIT_FILES.methods_figure,
            ),
            (
                f"Deletion and insertion curves, fold {fold}",
                Path("audit") / f"fold{fold}" / AUDIT_FILES.faithfulness_figure,
            ),
        ]
    return [(caption, path) for caption, path in candidates if (root / path).is_file()]


def figures_section(cfg: Config, folds: list[int]) -> Section:
    figures = figures_of(cfg, folds)
    if not figures:
        return "Figures", ["- None yet: `cxr evaluate` draws the first"]
    return "Figures", [f"![{caption}]({path.as_posix()})" for caption, path in figures]


def card_sections(cfg: Config, findings: Findings) -> list[Section]:
    folds = trained_folds(cfg)
    trained = load_config(fold_run(cfg, folds[0]).config)
    return [
        data_section(cfg, trained, folds),
        model_section(trained),
        *performance_section(findings.evaluation),
        external_section(findings.external),
        *explanation_section(experiment_dir(cfg), findings),
        (
            "Intended use",
            [
                "- Research on chest radiograph classifiers and their explanations; not a "
                "medical device, not for diagnosis"
            ],
        ),
        limitations_section(trained, findings),
        provenance_section(cfg, folds),
        figures_section(cfg, folds),
    ]


def write_model_card(cfg: Config, findings: Findings) -> Path:
    """runs/<experiment>/MODEL_CARD.md and MODEL_CARD.html (the same Markdown rendered, its
    figures shown), from the findings and the run's files."""
    sections = card_sections(cfg, findings)
    title = f"Model card: {md(cfg.experiment.name)}"
    markdown_text = "\n\n".join(
        [f"# {title}", *(f"## {head}\n\n" + "\n".join(lines) for head, lines in sections)]
    )
    folder = experiment_dir(cfg)
    write_text_atomic(folder / EXPERIMENT_FILES.card, markdown_text + "\n")
    write_text_atomic(folder / EXPERIMENT_FILES.card_page, as_html(plain(title), markdown_text))
    return folder / EXPERIMENT_FILES.card


# the review page's colours (cxr/explain/assets/review.html); every text pair is at least 4.5:1
STYLE = """
body { margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; background: #121417;
       color: #e9ecef; font: 15px/1.5 system-ui, sans-serif; }
a { color: #8cb8ff; }
h1, h2 { border-bottom: 1px solid #363c44; padding-bottom: 4px; }
code { background: #1d2126; color: #ffd166; padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #363c44; padding: 4px 10px; text-align: left; }
th { background: #1d2126; }
img { max-width: 100%; background: #fff; border-radius: 4px; margin: 8px 0 2px; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def as_html(title: str, markdown_text: str) -> str:
    """The card's Markdown rendered by Python-Markdown (tables, code marks, links, figures as
    pictures). User text in it is already inert: `md` wrote its HTML characters as entities."""
    return page(title, markdown.markdown(markdown_text, extensions=["tables"]))


def external_reports(cfg: Config) -> list[Path]:
    """The metrics.json of every dataset the experiment was run on with --on."""
    return sorted(external_dir(cfg).glob(f"*/{EVALUATION_FILES.metrics}"))


def experiment_index(cfg: Config) -> str:
    """runs/<experiment>/index.html: links to the model card, each fold's review page and audit,
    the figures and the external validations that exist."""
    root = experiment_dir(cfg)
    folds = trained_folds(cfg)
    items: list[tuple[str, list[tuple[str, Path]]]] = [
        ("Model card", [(EXPERIMENT_FILES.card_page, Path(EXPERIMENT_FILES.card_page))]),
        ("Reporting checklist", [(EXPERIMENT_FILES.claim, Path(EXPERIMENT_FILES.claim))]),
        (
            "Review pages",
            [("every explained fold", Path("explain") / REVIEW_PAGE)]
            + [(f"fold {k}", Path("explain") / f"fold{k}" / REVIEW_PAGE) for k in folds],
        ),
        (
            "Audits",
            [("pooled", Path("audit") / AUDIT_FILES.summary)]
            + [(f"fold {k}", Path("audit") / f"fold{k}" / AUDIT_FILES.summary) for k in folds],
        ),
        ("Figures", [(caption, path) for caption, path in figures_of(cfg, folds)]),
        (
            "External validation",
            [(p.parent.name, p.relative_to(root)) for p in external_reports(cfg)]
            + [
                (f"{p.parents[2].name}: review page, fold {p.parent.name[4:]}", p.relative_to(root))
                for p in sorted(external_dir(cfg).glob(f"*/explain/fold*/{REVIEW_PAGE}"))
            ],
        ),
    ]
    body = [f"<h1>{html.escape(cfg.experiment.name)}</h1>"]
    for head, links in items:
        found = [(text, path) for text, path in links if (root / path).exists()]
        body.append(f"<h2>{html.escape(head)}</h2>")
        if not found:
            body.append("<p>none yet</p>")
            continue
        body.append(
            "<ul>"
            + "".join(
                f"<li><a href='{html.escape(quote(path.as_posix()))}'>{html.escape(text)}</a></li>"
                for text, path in found
            )
            + "</ul>"
        )
    return page(f"cxr: {cfg.experiment.name}", "\n".join(body))
