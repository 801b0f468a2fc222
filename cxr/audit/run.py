"""audit_fold(cfg, fold, methods): can a fold's explanations be trusted? Localisation against
boxes, the randomisation sanity check, faithfulness and shortcuts, per method, from one pass over
the fold's images (cxr.audit.sweep).

Writes runs/<experiment>/audit/fold<K>/: localisation.csv (per image, per method and baseline),
sanity.csv (per method and stage), faithfulness.csv and .png (deletion / insertion), road.csv (ROAD:
per image, method or baseline map, and share removed), map_metrics.csv, shortcuts.csv,
methods.csv and .png (methods side by side), and summary.json: the typed AuditSummary
(cxr.results.audit) that the printed summary also comes from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.atomic import write_json_atomic
from cxr.audit.inputs import AuditInputs
from cxr.audit.intervention import (
    intervention_rows,
    paste_rows,
    summarise_interventions,
    summarise_pastes,
)
from cxr.audit.localisation import with_baseline_maps
from cxr.audit.parts import SCORES
from cxr.audit.shortcut import summarise_shortcuts
from cxr.audit.sweep import Sample, sweep_fold
from cxr.catalogs.methods import method_parameters
from cxr.config import OVERLAY_FORMATS, Config, check_baseline
from cxr.data.labels import decode_boxes, patient_of
from cxr.data.lungfields import (
    CropBox,
    lung_region,
    seen_box,
    stored_size,
    to_input,
    whole_film,
)
from cxr.data.pipeline import fold_dataset, images_named_on_failure
from cxr.data.regions import region_codes
from cxr.documents import write_documents
from cxr.errors import ConfigError
from cxr.explain.methods import get_method
from cxr.explain.overlay import draw_overlay, place_map, write_overlay
from cxr.explain.probe import make_probe
from cxr.explain.review import audit_verdicts, write_fold_review
from cxr.explain.rows import overlay_name, stored_pixels
from cxr.external import External
from cxr.figures import plt, save_figure
from cxr.models.fusing import fuse_batch_norm
from cxr.results.audit import (
    AuditSummary,
    flagged_regions,
)
from cxr.runs import AUDIT_FILES, EXPERIMENT_FILES, EXPLAIN_FILES, command_dir, experiment_dir
from cxr.tables import read_csv, write_csv
from cxr.trained import TrainedFold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditResult:
    folder: Path
    summary: AuditSummary
    rows: dict[str, pd.DataFrame]  # each score's rows (cxr.audit.parts), by its name
    shortcuts: pd.DataFrame  # per image: where the first method's map of the prediction looks


def audit_fold(
    cfg: Config,
    fold: int,
    methods: list[str],
    layer: str | None = None,
    sanity_stages: int = 8,
    baseline: str = "black",
    on: External | None = None,
) -> AuditResult:
    """Every part of the audit for one fold's validation images (or, `on`, every image of an
    external dataset); an undecodable image is named, not a TensorFlow traceback."""
    if not methods:
        raise ConfigError(
            "no explanation method to audit: name one or more, e.g. --methods gradcam,hirescam"
        )
    for method in methods:
        get_method(method)
    check_baseline(baseline)  # a wrong name fails before any work
    trained = TrainedFold.open(cfg, fold, on, layer)
    fold_cfg = trained.settings
    # real radiographs: the shipped lung model finds them first, for this fold's images only
    table = trained.table(lungs=True)
    with images_named_on_failure(fold_cfg.data.dataset_dir, table):
        return _audit_fold(trained, table, methods, sanity_stages, baseline)


class Stopwatch:
    """Seconds per part of the audit, said in one line at the end: where its time goes."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start

    def line(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.parts.items())


def _audit_fold(
    trained: TrainedFold,
    table: pd.DataFrame,
    methods: list[str],
    sanity_stages: int,
    baseline: str,
) -> AuditResult:
    """One pass over the fold feeds every audit; the sample it keeps goes through the model again
    for the sanity check (randomised copies) and faithfulness (perturbed images)."""
    fold, classes, layer, fold_cfg = trained.fold, trained.classes, trained.layer, trained.settings
    folder = trained.folder("audit")
    model = trained.run.load_model()
    # the sweep and the metrics run the model with its batch norms fused (the same outputs,
    # sooner); the sanity cascade randomises the saved model's own layers, batch norms included
    fused = fuse_batch_norm(model, keep=[layer])
    # the target's probability: a softmax, or a multi-label model's own sigmoid per finding
    multi_label = fold_cfg.data.multi_label
    probe = make_probe(
        fused, layer, parameters=method_parameters(fold_cfg.explain), multi_label=multi_label
    )
    clock = Stopwatch()
    with clock("one pass over the fold"):
        # audit.sample: also the batch of every sanity step, padded: one traced shape per method
        seen = sweep_fold(fold_cfg, probe, table, classes, methods, fold_cfg.audit.sample)
    images, targets, maps = seen.sample.arrays()
    inputs = AuditInputs(
        trained=trained,
        model=model,
        fused=fused,
        probe=probe,
        seen=seen,
        images=images,
        targets=targets,
        maps=maps,
        # the methods' maps, then a random and a centre map per image: what every number is read
        # against (the same draws as the map metrics', which are seeded alike)
        every=with_baseline_maps(maps, len(images), images.shape[1:3], np.random.default_rng(fold)),
        stages=sanity_stages,
        baseline=baseline,
        folder=folder,
    )
    rows, scores = {}, {}
    for part in SCORES:
        with clock(part.label):
            rows[part.name] = part.rows(inputs)
        scores[part.name] = part.summarise(rows[part.name], baseline)
    with clock("interventions"):
        sample = intervention_sample(trained, table) if not multi_label else None
        interventions = (
            pd.DataFrame()
            if sample is None
            else intervention_rows(fused, *sample, fold, inputs.batch)
        )
        evidence = summarise_interventions(interventions, classes, fold)
        flagged = flagged_regions(evidence)
        pastes = (
            pd.DataFrame()
            if sample is None
            else paste_rows(fused, *sample, flagged, classes, fold, inputs.batch)
        )
    log.info("fold %d audited: %s", fold, clock.line())
    if not len(seen.localisation):
        log.warning("fold %d has no image with a box: localisation skipped", fold)
    summary = AuditSummary(
        fold=fold,
        folds=[fold],
        layer=layer,
        **scores,
        shortcuts=summarise_shortcuts(seen.shortcuts, methods[0]),
        sample=seen.sample.names,
        interventions=evidence,
        pastes=summarise_pastes(pastes, fold),
    )
    write_csv(interventions, folder / AUDIT_FILES.interventions)
    write_csv(pastes, folder / AUDIT_FILES.pastes)
    for part in SCORES:
        write_csv(rows[part.name], folder / part.file)
    write_csv(methods_table(summary), folder / AUDIT_FILES.methods, index=True)
    if seen.figure.names:
        plot_methods(seen.figure, methods, folder / AUDIT_FILES.methods_figure)
    write_csv(seen.shortcuts, folder / AUDIT_FILES.shortcuts)
    write_summary(folder, summary)
    method_maps = write_method_maps(folder, seen.sample, methods, fold_cfg)
    write_csv(method_maps, folder / AUDIT_FILES.method_maps)
    verdicts = audit_verdicts(seen.shortcuts, summary.flagged_on_evidence)
    refresh_review(trained, table, verdicts, method_maps)
    return AuditResult(folder, summary, rows, seen.shortcuts)


def write_method_maps(
    folder: Path, sample: Sample, methods: list[str], fold_cfg: Config
) -> pd.DataFrame:
    """The sample's maps (of each image's true class) as overlays, one per method, in
    maps/<method>/: the review page shows them side by side. One row per image and method."""
    rows = []
    explain = fold_cfg.explain
    suffix = OVERLAY_FORMATS[explain.overlay_format][0]
    for i, name in enumerate(sample.names):
        grey, box = sample_film(fold_cfg, sample.rows[i], sample.images[i])
        for method in methods:
            path = Path("maps") / method / overlay_name(name, suffix)
            heatmap = place_map(sample.maps[method][i], box, grey.shape)
            pixels = draw_overlay(
                grey, heatmap, explain.colormap, explain.alpha, False, [], seen=box
            )
            write_overlay(pixels, folder / path)
            rows.append({"image": name, "method": method, "overlay": path.as_posix()})
    return pd.DataFrame(rows, columns=["image", "method", "overlay"])


def sample_film(
    fold_cfg: Config, row: dict, image: np.ndarray
) -> tuple[np.ndarray, CropBox | None]:
    """The film to draw a sample image's maps on, and the part of it the model saw: the model's
    input itself, or, with data.crop, the stored film and the crop box (None: the whole film)."""
    data = fold_cfg.data
    if data.crop != "lungs":
        return np.clip(np.rint(image.mean(axis=-1)), 0, 255).astype(np.uint8), None
    grey = stored_pixels(data.dataset_dir / row["image"], row, None)  # as explain reads it
    lungs = lung_region(data.dataset_dir, row, grey.shape)
    return grey, seen_box(lungs, data)


def refresh_review(
    trained: TrainedFold, table: pd.DataFrame, verdicts: pd.DataFrame, method_maps: pd.DataFrame
) -> None:
    """The fold's review page again, now with the audit's verdicts and its sample's maps by
    method (when the fold was explained): its audit filter and the audit's links to it."""
    explain = trained.folder("explain")
    if not (explain / EXPLAIN_FILES.report).exists():
        return
    card = experiment_dir(trained.settings) / EXPERIMENT_FILES.card_page
    report = read_csv(explain / EXPLAIN_FILES.report)
    write_fold_review(
        explain,
        trained.folder("audit"),
        report,
        table,
        trained.classes,
        {"model card": card},
        verdicts,
    )


def intervention_sample(
    trained: TrainedFold, table: pd.DataFrame, per_class: int | None = None
) -> tuple[np.ndarray, list[np.ndarray], list[str], list[str]]:
    """Up to `per_class` (audit.intervention_images) images of each true class with plausible
    lung fields (seeded), at the model's input size, with their regions as the model sees them
    (the film's regions, cropped like the film with data.crop, resized to the input), names and
    patients."""
    data = trained.settings.data
    dataset_dir, size = data.dataset_dir, data.image_size
    per_class = per_class or trained.settings.audit.intervention_images

    def film_lungs(row: dict) -> np.ndarray | None:
        lungs = lung_region(dataset_dir, row, stored_size(dataset_dir, row))
        return lungs if lungs is not None and lungs.any() else None

    records = table.to_dict("records")
    known = table.loc[[i for i, row in enumerate(records) if film_lungs(row) is not None]]
    chosen = sorted(
        index
        for _, part in known.groupby("label", sort=True)
        for index in part.sample(min(per_class, len(part)), random_state=trained.fold).index
    )
    codes = {}
    for i in chosen:  # the chosen films' lung fields read again: not every film's kept in memory
        lungs = film_lungs(records[i])
        box = seen_box(lungs, data) or whole_film(lungs.shape)
        codes[i] = to_input(region_codes(lungs), box, size)
    if not chosen:
        return np.zeros((0, size, size, trained.settings.data.channels)), [], [], []
    part = table.loc[chosen].reset_index(drop=True)
    images = np.concatenate(
        [
            batch.numpy()
            for batch, _ in fold_dataset(
                trained.settings, part, trained.classes, trained.batch_size
            )
        ]
    )
    return (
        images,
        [codes[i] for i in chosen],
        part["image"].tolist(),
        [patient_of(row) for row in part.to_dict("records")],
    )


def write_summary(folder: Path, summary: AuditSummary) -> None:
    write_json_atomic(folder / AUDIT_FILES.summary, summary.to_json())


def methods_table(summary: AuditSummary) -> pd.DataFrame:
    """Every method (and baseline) on one row: each score's columns side by side."""
    rows: dict[str, dict] = {}
    for scores in summary.scores().values():
        for method, record in scores.items():
            rows.setdefault(method, {}).update(record.columns())
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def plot_methods(figure: Sample, methods: list[str], path: Path) -> None:
    """A few images with boxes, one column per method: the same maps side by side, drawn on the
    model's input and stretched to the stored size, or to the part of the film a cropped model saw
    (data.crop), so that the boxes (stored pixels) fit."""
    fig, axes = plt.subplots(
        len(figure.names),
        len(methods),
        figsize=(2.4 * len(methods), 2.4 * len(figure.names)),
        squeeze=False,
    )
    for r, (image, row) in enumerate(zip(figure.images, figure.rows, strict=True)):
        height, width = row["stored_size"]
        box = row["crop_box"] or whole_film((height, width))
        extent = (box.left, box.left + box.width, box.top + box.height, box.top)
        grey = image.mean(axis=-1)
        for c, method in enumerate(methods):
            ax = axes[r][c]
            ax.imshow(grey, cmap="gray", extent=extent)
            ax.imshow(figure.maps[method][r], cmap="jet", alpha=0.4, vmin=0, vmax=1, extent=extent)
            for b in decode_boxes(row["boxes"]):
                ax.add_patch(
                    plt.Rectangle((b.x, b.y), b.w, b.h, fill=False, edgecolor="white", linewidth=1)
                )
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(method, fontsize=9)
    save_figure(fig, path)


def audit_folds(
    cfg: Config,
    folds: list[int],
    methods: list[str],
    layer: str | None = None,
    sanity_stages: int = 8,
    baseline: str = "black",
    on: External | None = None,
) -> tuple[list[AuditResult], AuditSummary | None]:
    """Each fold in turn; with several, also the audit pooled over them in
    runs/<experiment>/audit/. On an external dataset every fold sees the same images, so nothing
    is pooled: each fold's audit stands alone."""
    results = [audit_fold(cfg, fold, methods, layer, sanity_stages, baseline, on) for fold in folds]
    audits: dict[int | None, AuditSummary] = {
        r.summary.fold: r.summary for r in results if on is None
    }
    if len(results) < 2 or on is not None:
        write_documents(cfg, audits=audits)
        return results, None
    pooled = pool_audits(results, baseline)
    folder = command_dir(experiment_dir(cfg), "audit")
    by_fold = pd.concat([methods_table(r.summary).assign(fold=r.summary.fold) for r in results])
    write_csv(by_fold, folder / AUDIT_FILES.methods_by_fold, index=True)
    write_csv(methods_table(pooled), folder / AUDIT_FILES.methods, index=True)
    write_summary(folder, pooled)
    write_documents(cfg, audits={**audits, None: pooled})
    return results, pooled


def pool_audits(results: list[AuditResult], baseline: str = "black") -> AuditSummary:
    """One summary over folds: each score pooled over every fold's images (each explained by the
    model that did not train on it), or from the folds' own records where the score says so (the
    sanity check: passed only when it passes in every fold); the shortcuts over every image."""
    scores = {}
    for part in SCORES:
        if part.pool is not None:
            scores[part.name] = part.pool([r.summary.scores()[part.name] for r in results])
        else:
            every = pd.concat([r.rows[part.name] for r in results], ignore_index=True)
            scores[part.name] = part.summarise(every, baseline)
    shortcuts = pd.concat([r.shortcuts for r in results], ignore_index=True)
    return AuditSummary(
        fold=None,
        folds=[r.summary.fold for r in results],
        layer=results[0].summary.layer,
        **scores,
        shortcuts=summarise_shortcuts(shortcuts, results[0].summary.shortcuts.method),
        sample=[name for r in results for name in r.summary.sample],
    )
