"""What each command prints: a result rendered as lines on the terminal."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from cxr.results.audit import AuditSummary, RegionGroup, Regions
from cxr.results.evaluation import Evaluation, ExternalEvaluation, Metrics
from cxr.results.explanation import ExplainSummary
from cxr.runs import AUDIT_FILES


def describe_metrics(metrics: Metrics) -> str:
    """ROC AUC and accuracy, then what a reader of a binary test asks next: sensitivity, specificity
    and the confusion counts for the positive class; each with its 95% interval over patients when
    there is one, and the calibration."""

    def value(name: str, digits: int = 3) -> str:
        found = getattr(metrics, name)
        text = figure(found, name, digits)
        if name in metrics.ci95 and defined(found):
            low, high = metrics.ci95[name]
            text += f" [{figure(low, name, digits)}, {figure(high, name, digits)}]"
        return text

    text = f"ROC AUC {value('roc_auc')}, accuracy {value('accuracy')} (n = {metrics.n})"
    if metrics.positive_class is not None:
        # rows true, columns predicted, in class order
        (tn, fp), (fn, tp) = metrics.confusion_matrix
        if metrics.classes.index(metrics.positive_class) == 0:
            (tp, fn), (fp, tn) = metrics.confusion_matrix
        text += (
            f"; {metrics.positive_class}: sensitivity {value('sensitivity')}, "
            f"specificity {value('specificity')} (TP {tp}, FN {fn}, TN {tn}, FP {fp})"
        )
    if metrics.calibration is not None:
        found = metrics.calibration
        text += f"; ECE {found.ece:.3f}, Brier {found.brier:.3f}"
    return text


def defined(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


UNDEFINED_BECAUSE = {"precision": "nothing called positive"}  # else: one class only


def figure(value: object, name: str, digits: int = 3) -> str:
    """A metric's value to `digits` places, or why it is undefined (NaN in memory, null in JSON):
    a set with one class has no sensitivity or ROC AUC, never a 0.0."""
    if defined(value):
        return f"{value:.{digits}f}"
    return f"undefined ({UNDEFINED_BECAUSE.get(name, 'one class')})"


def describe_extras(metrics: Metrics) -> list[str]:
    """Patient-level figures and out-of-fold operating points, where the metrics have them."""
    lines = []
    for how, found in metrics.patients.items():
        lines.append(
            f"per patient ({how} of the images' probabilities, {found.n} patients): ROC AUC "
            f"{figure(found.roc_auc, 'roc_auc')}, sensitivity "
            f"{figure(found.sensitivity, 'sensitivity')}, specificity "
            f"{figure(found.specificity, 'specificity')}"
        )
    scaled = metrics.temperature
    if scaled:
        before, after = scaled.before, scaled.after
        temps = ", ".join(f"{t:.2f}" for t in scaled.per_fold.values())
        lines.append(
            f"temperature scaling (fitted on the other folds, T = {temps}): ECE "
            f"{before.ece:.3f} -> {after.ece:.3f}, Brier {before.brier:.3f} -> "
            f"{after.brier:.3f}, NLL {before.nll:.3f} -> {after.nll:.3f}"
        )
    groups = metrics.subgroups
    if groups:
        shown = "; ".join(
            f"{g.column}={g.value} {g.roc_auc:.3f} [{g.ci95_low:.3f}, {g.ci95_high:.3f}] "
            f"({g.images})"
            for g in groups
        )
        lines.append(f"ROC AUC by subgroup [95% CI] (images): {shown}")
        below = [f"{g.column}={g.value}" for g in groups if g.below_overall]
        lines.append(
            "subgroups whose interval lies wholly below the overall AUC: "
            + (", ".join(below) if below else "none")
        )
    for name, point in metrics.operating_points.items():
        if not point.thresholds:  # the fixed 0.5: the headline figures already say it
            continue
        what = "Youden point" if name == "youden" else f"sensitivity >= {name.split('_')[1]}"
        thresholds = ", ".join(f"{t:.3f}" for t in point.thresholds.values())
        lines.append(
            f"threshold at the {what}, chosen on the other folds ({thresholds}): sensitivity "
            f"{point.sensitivity:.3f}, specificity {point.specificity:.3f}"
        )
    return lines


def describe_evaluation(result: Evaluation) -> list[str]:
    """`cxr evaluate`: each fold's validation metrics, then the pooled ones over folds."""
    lines = []
    for k, metrics in result.per_fold.items():
        lines.append(f"fold {k}: validation {describe_metrics(metrics)}")
        if len(result.folds) == 1:
            lines += describe_extras(metrics)
    if len(result.folds) > 1:
        auc = result.mean_std["roc_auc"]
        lines.append(f"pooled over {len(result.folds)} folds: {describe_metrics(result.pooled)}")
        lines.append(f"ROC AUC per fold {auc.mean:.3f} ± {auc.std:.3f}")
        lines += describe_extras(result.pooled)
    return [*lines, f"reports in {result.folder} and each fold's evaluation/"]


def describe_external(result: ExternalEvaluation) -> list[str]:
    """`cxr evaluate --on`: each fold's model on the other dataset, then their ensemble."""
    lines = [
        f"fold {k} model on {result.dataset}: {describe_metrics(metrics)}"
        for k, metrics in result.per_fold.items()
    ]
    models = f"{len(result.folds)} model{'s' if len(result.folds) > 1 else ''}"
    lines.append(
        f"fold ensemble ({models}, mean probability) on {result.dataset}: "
        f"{describe_metrics(result.ensemble)}"
    )
    lines += describe_extras(result.ensemble)
    return [*lines, f"external validation reports in {result.folder}"]


def describe_explanation(s: ExplainSummary, folder: Path) -> list[str]:
    """One fold's `cxr explain`: counts of right and wrong maps, localisation, fold agreement."""
    counts = f"{s.images} images, {s.right} right, {s.wrong} wrong"
    if s.several_per_image:
        counts = f"{s.images} images, {s.rows} (image, class) rows: {s.right} right, "
        counts += f"{s.wrong} wrong"
    lines = [f"fold {s.fold}: {counts}, {s.empty_maps} empty maps -> {folder}"]
    if s.localisation:
        loc = s.localisation
        lines.append(
            f"  map peak inside the finding's box for {loc.peak_in_box:.0%} of "
            f"{loc.true_positives_with_boxes} true positives "
            f"(image centre: {loc.centre_baseline:.0%}, random pixel: "
            f"{loc.random_baseline:.0%})"
        )
    if s.fold_agreement:
        a = s.fold_agreement
        lines.append(
            f"  fold agreement with folds {a.other_folds}: median rank correlation "
            f"of the maps {a.median_rank_correlation:.2f}, median spread of the "
            f"probability {a.median_probability_std:.3f}; maps that disagree "
            f"most: {', '.join(a.most_disagreeing[:5])} (fold_agreement.csv)"
        )
    return lines


def print_interventions(summary: AuditSummary) -> None:
    """What the decision depends on: each region filled in turn, against the same area filled in
    the lungs (cxr.audit.intervention)."""
    from cxr.audit.intervention import TESTED, evidence_lines, paste_lines

    if not summary.interventions:
        return
    for name, regions in summary.interventions.items():
        shown = ", ".join(
            f"{region} {i.change.mean:+.2f} ({i.control.mean:+.2f})"
            for region, i in regions.items()
        )
        images = max(i.images for i in regions.values())
        unseen = [region for region in TESTED if region not in regions]
        typer.echo(
            f"filled in turn, called {name} ({images} images): change of P({name}) per region "
            f"(control: as many pixels filled in the lungs, or off the chest for the lungs) {shown}"
            + (f"; not tested, in no input the model sees: {', '.join(unseen)}" if unseen else "")
        )
    regions = summary.shortcuts.regions
    lines = evidence_lines(summary.interventions, regions.per_class if regions else None)
    for line in lines:
        typer.echo(line)
    for line in paste_lines(summary.pastes):
        typer.echo(line)
    typer.echo(
        "shortcut audit by intervention, what the decision depends on: "
        + ("FLAGGED for " + ", ".join(summary.flagged_on_evidence) if lines else "not flagged")
    )


def region_line(name: str, group: RegionGroup) -> str:
    """Where one group's maps peak and how much of their energy lies outside, beside a uniform
    map."""
    from cxr.data.regions import OFF_CHEST, REGION_WORDS

    peaks = group.peaks
    top = group.most_above_uniform(OFF_CHEST)
    lungs, chest = group.outside_lungs, group.outside_chest
    return (
        f"  {name}: {peaks['lung'].share:.0%} of peaks inside the lungs (uniform map: "
        f"{peaks['lung'].uniform:.0%}), {peaks[top].share:.0%} {REGION_WORDS[top]} "
        f"({peaks[top].uniform:.0%}); energy outside the lungs {lungs.mean:.2f} (uniform "
        f"{lungs.uniform:.2f}), outside the chest {chest.mean:.2f} (uniform {chest.uniform:.2f}); "
        f"{group.images} images"
    )


def print_regions(regions: Regions) -> None:
    """Where each predicted class's (and each outcome's) maps look, and the classes flagged."""
    typer.echo(
        f"where the maps look ({regions.images} images with lung fields), by predicted class:"
    )
    for name, group in regions.per_class.items():
        typer.echo(region_line(name, group))
    if regions.per_outcome:
        typer.echo("by outcome:")
        for name, group in regions.per_outcome.items():
            typer.echo(region_line(name, group))
    for name, reasons in regions.flags.items():
        typer.echo(f"  FLAGGED {name}: {'; '.join(reasons)}")


def print_audit(summary: AuditSummary, folder: Path) -> None:
    """An audit summary (one fold's, or pooled over folds), a line per finding."""
    folds = None if summary.fold is not None else len(summary.folds)
    for scores in summary.scores().values():
        for method, record in scores.items():
            typer.echo(record.line(method, folds))
    if summary.best_method:
        typer.echo(f"best localisation: {summary.best_method}")
    elif summary.localisation:
        typer.echo("best localisation: no method beat both baselines (random map, centre map)")
    shortcuts = summary.shortcuts
    if shortcuts.implausible_lungs:
        typer.echo(
            f"{shortcuts.implausible_lungs} of {shortcuts.images} image(s) have no plausible lung "
            "fields: the region audit leaves them out and judges them by the border band"
        )
    if shortcuts.regions is not None:
        print_regions(shortcuts.regions)
    for name, c in shortcuts.per_class.items():
        typer.echo(
            f"shortcut audit, predicted {name}: {c.flagged_share:.0%} of {c.images} maps "
            f"mostly outside the lungs (mean share outside {c.mean_outside_share:.2f})"
        )
    flagged = ", ".join(shortcuts.flagged_classes)
    typer.echo(
        f"shortcut audit ({shortcuts.rule} rule, {shortcuts.method}), where the maps look: "
        f"{'FLAGGED for ' + flagged if flagged else 'not flagged'}"
    )
    print_interventions(summary)
    figures = [
        name
        for name in (AUDIT_FILES.methods_by_fold, AUDIT_FILES.methods_figure)
        if (folder / name).is_file()
    ]
    typer.echo(
        f"audit in {folder} (methods side by side: {', '.join([AUDIT_FILES.methods, *figures])})"
    )
