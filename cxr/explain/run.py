"""explain_fold(cfg, fold, options): every validation image of a fold through that fold's best
model. This module is the fold loop; the rows and overlays are cxr.explain.rows, resuming is
cxr.explain.resume, maps.npz is cxr.explain.mapsfile, fold agreement cxr.explain.agreement.

Streams batches from disk; the map of one batch is computed while a thread pool writes the previous
batch's overlays, so memory stays flat and encoding them (JPEG or PNG) overlaps with the gradients.
Writes into runs/<experiment>/explain/fold<K>/: right/ and wrong/ overlays, report.csv,
summary.json, montage.png, films/ and the review page (index.html, review.js,
cxr.explain.review), and maps.npz with --save-maps.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cxr.atomic import write_json_atomic
from cxr.catalogs.methods import LAYER_METHODS, method_parameters
from cxr.config import Config
from cxr.data.download import file_digest
from cxr.data.pipeline import fold_dataset, images_named_on_failure
from cxr.documents import write_documents
from cxr.errors import ConfigError, DataError
from cxr.explain.agreement import fold_agreement, summarise_agreement
from cxr.explain.gallery import write_montage
from cxr.explain.mapsfile import MapsWriter
from cxr.explain.methods import Explanation, explain_batch, get_method
from cxr.explain.options import ExplainOptions, in_shard
from cxr.explain.probe import Probe, coarse_map_note, make_probe
from cxr.explain.report import output_probabilities, summarise_fold
from cxr.explain.resume import read_previous_rows
from cxr.explain.review import read_audit_verdicts, write_fold_review, write_review
from cxr.explain.rows import (
    FoldContext,
    classes_per_image,
    image_row,
    is_positive,
    target_indices,
    with_boxes,
)
from cxr.external import External
from cxr.models.fusing import fuse_batch_norm
from cxr.models.precision import use_mixed_precision, with_policy
from cxr.results.explanation import ExplainSummary
from cxr.results.records import to_json
from cxr.runs import (
    EXPERIMENT_FILES,
    EXPLAIN_FILES,
    command_dir,
    experiment_dir,
    sharded,
    trained_folds,
)
from cxr.tables import write_csv
from cxr.trained import TrainedFold

log = logging.getLogger(__name__)
_NOTED: set[str] = set()
# JPEG / PNG encoding and decoding release the GIL: with a GPU busy on the maps, the CPU cores draw
# the overlays
OVERLAY_THREADS = max(2, min(8, os.cpu_count() or 2))


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep what is alive now (TensorFlow and Keras: 400,000 objects, all outliving the fold) out of
    the garbage collector's full passes while the block runs; each pass walked them all, 0.2 s of a
    3.4 s run of 256 images. Left alone when the caller froze objects of its own."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class FoldExplanation:
    fold: int
    folder: Path
    report: pd.DataFrame
    summary: ExplainSummary
    table: pd.DataFrame  # the fold's images (sizes, boxes), for the experiment's review page


@frozen_heap()
def explain_fold(
    cfg: Config, fold: int, options: ExplainOptions, on: External | None = None
) -> FoldExplanation:
    """Maps, overlays, report and summary for one fold's validation images (or, `on`, for every
    image of an external dataset)."""
    get_method(options.method)
    trained = TrainedFold.open(cfg, fold, on, options.layer)
    run, classes, fold_cfg, layer = trained.run, trained.classes, trained.settings, trained.layer
    several = classes_per_image(options.target, classes) > 1  # checks --target first
    if options.fold_agreement and several:
        raise ConfigError(
            f"--fold-agreement compares one map per image; --target {options.target} explains "
            "several: use predicted, true or a class name with it"
        )
    others = other_folds(cfg, trained, options.layer) if options.fold_agreement else []
    folder = trained.folder("explain")
    table = trained.table()
    table = table[[in_shard(image, options.shard) for image in table["image"]]].reset_index(
        drop=True
    )
    settings = {
        "method": options.method,
        "layer": layer if options.method in LAYER_METHODS else "input",
        "target": options.target,
        "model_sha256": file_digest(run.model)[
            :16
        ],  # a retrained fold never reuses the old model's maps
    }
    previous = pd.DataFrame() if options.overwrite else read_previous_rows(folder, settings)
    todo = table[~table["image"].isin(previous.get("image", pd.Series(dtype=str)))].reset_index(
        drop=True
    )
    log.info(
        "fold %d: %d images to explain, %d done before (%s at %s)",
        fold,
        len(todo),
        len(table) - len(todo),
        options.method,
        layer,
    )

    ctx = FoldContext(
        cfg, fold_cfg, run, classes, trained.positive, layer, settings, options, folder, several
    )
    with images_named_on_failure(fold_cfg.data.dataset_dir, todo):
        rows = explain_rows(ctx, todo) if len(todo) else []
    report = pd.concat([previous, pd.DataFrame(rows)], ignore_index=True) if rows else previous
    report = (
        report[report["image"].isin(table["image"])]
        .sort_values("image", kind="stable")  # several classes of an image keep their order
        .reset_index(drop=True)
    )
    summary = ExplainSummary(**summarise_fold(with_boxes(report, table)), fold=fold, **settings)
    if options.fold_agreement:
        found = agreement_of(trained, others, report, options)
        write_csv(found, folder / EXPLAIN_FILES.fold_agreement)
        summary = dataclasses.replace(summary, fold_agreement=summarise_agreement(found))
    write_csv(report, folder / sharded(EXPLAIN_FILES.report, options.shard))
    write_json_atomic(folder / sharded(EXPLAIN_FILES.summary, options.shard), to_json(summary))
    write_montage(folder, report, options.montage_size)
    write_fold_review(
        folder,
        trained.folder("audit"),
        report,
        table,
        classes,
        {"model card": experiment_dir(cfg) / EXPERIMENT_FILES.card_page},
    )
    return FoldExplanation(fold, folder, report, summary, table)


def other_folds(cfg: Config, trained: TrainedFold, layer: str | None) -> list[TrainedFold]:
    """The experiment's other trained folds, for --fold-agreement (checked before any work)."""
    others = [
        TrainedFold.open(cfg, k, trained.on, layer) for k in trained_folds(cfg) if k != trained.fold
    ]
    if not others:
        raise ConfigError(
            f"--fold-agreement compares fold {trained.fold}'s maps with other folds' models, and "
            f"experiment {cfg.experiment.name!r} has no other trained fold; train one first"
        )
    return others


def agreement_of(
    trained: TrainedFold, others: list[TrainedFold], report: pd.DataFrame, options: ExplainOptions
) -> pd.DataFrame:
    """The report's images explained again by every other trained fold (cxr.explain.agreement)."""
    settings = {t.fold: t.settings for t in [trained, *others]}
    target_layer = trained.layer if options.method in LAYER_METHODS else None
    return fold_agreement(
        trained.run,
        [t.run for t in others],
        settings,
        report,
        trained.classes,
        options.method,
        target_layer,
    )


def explain_rows(ctx: FoldContext, todo: pd.DataFrame) -> list[dict]:
    """The streaming loop: one batch of maps at a time, overlays written by a thread pool
    meanwhile."""
    options, classes = ctx.options, ctx.classes
    batch_size = ctx.fold_cfg.explain.batch_size  # the trained fold's, as every map loop's
    # the iterator starts decoding the first batches on tf.data's threads while the model loads
    batches = iter(fold_dataset(ctx.fold_cfg, todo, classes, batch_size))
    probe = fold_probe(ctx)
    maps_name = sharded(EXPLAIN_FILES.maps, options.shard)
    maps_file = MapsWriter(ctx.folder / maps_name) if options.save_maps else None
    rows: list[dict] = []
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=OVERLAY_THREADS) as pool:
        for start, (images, labels) in zip(range(0, len(todo), batch_size), batches, strict=False):
            part = todo.iloc[start : start + batch_size]
            targets = target_indices(options.target, labels.numpy(), classes)
            # one shape: one trace
            result = explain_batch(probe, images, targets, options.method, pad_to=batch_size)
            for done in pending:  # keep at most one batch of overlays in flight
                rows.append(done.result())
            pixels = images.numpy()[
                ..., 0
            ]  # the decoded images: the overlays reuse them when the stored size is the model's
            chosen = explained_entries(ctx, part["image"].tolist(), result)
            records = part.to_dict("records")
            first = {i: j for i, j, _ in reversed(chosen)}  # each image's first kept map
            pending = [
                pool.submit(image_row, ctx, records[i], result, j, pixels[i], first[i] == j)
                for i, j, _ in chosen
            ]
            if maps_file:
                maps_file.add([(key, j) for _, j, key in chosen], result)
        rows.extend(done.result() for done in pending)
    if maps_file:
        maps_file.close()
    return rows


def fold_probe(ctx: FoldContext) -> Probe:
    """The fold's model, its batch norms fused into the convolutions before them (as float16
    with explain.mixed_precision), probed at the fold's layer; a note, once per process, when that
    layer's maps are coarse."""
    cfg, options = ctx.cfg, ctx.options
    layer = ctx.layer if options.method in LAYER_METHODS else None
    model = fuse_batch_norm(ctx.run.load_model(), keep=[layer])
    if use_mixed_precision(cfg.explain.mixed_precision, "explain.mixed_precision"):
        model = with_policy(model, "mixed_float16")
    probe = make_probe(
        model,
        layer,
        jit_compile=cfg.explain.xla,
        parameters=method_parameters(cfg.explain),
        multi_label=ctx.fold_cfg.data.multi_label,
    )
    note = coarse_map_note(model, probe.layer_name) if layer else None
    if note and note not in _NOTED:  # once per process, not once per fold
        _NOTED.add(note)
        log.warning("%s", note)
    return probe


def explained_entries(
    ctx: FoldContext, images: list[str], result: Explanation
) -> list[tuple[int, int, str]]:
    """(image's place in the batch, its map's place in the result, the maps.npz key) for every
    map to keep: one per image, or one per image and class (all-positive: the classes the model
    calls present)."""
    if not ctx.several:
        return [(i, i, image) for i, image in enumerate(images)]
    per_image = len(result.class_index) // len(images)
    multi_label = ctx.fold_cfg.data.multi_label
    probabilities = output_probabilities(result.logits, multi_label)
    kept = []
    for i, image in enumerate(images):
        for j in range(i * per_image, (i + 1) * per_image):
            index = int(result.class_index[j])
            if ctx.options.target != "all-positive" or is_positive(probabilities[j], index):
                kept.append((i, j, f"{image}/{ctx.classes[index]}"))
    return kept


def explain_folds(
    cfg: Config, folds: list[int], options: ExplainOptions, on: External | None = None
) -> tuple[list[FoldExplanation], pd.DataFrame | None]:
    """Several folds; with more than one, also one report over all of them."""
    if not folds:
        raise DataError(
            f"no trained folds to explain for experiment {cfg.experiment.name!r}; run `cxr train` "
            "first"
        )
    results = [explain_fold(cfg, fold, options, on) for fold in folds]
    explained = {r.fold: r.summary for r in results if on is None and options.shard is None}
    if len(results) == 1:
        write_documents(cfg, explained=explained)
        return results, None
    combined = pd.concat([r.report for r in results], ignore_index=True)
    root = experiment_dir(cfg) if on is None else on.folder
    write_csv(combined, command_dir(root, "explain") / EXPLAIN_FILES.report)
    write_experiment_review(cfg, results, root)
    write_documents(cfg, explained=explained)
    return results, combined


def write_experiment_review(cfg: Config, results: list[FoldExplanation], root: Path) -> None:
    """explain/index.html: one review page over every explained fold (each tile's links lead
    into its fold's folder), with each fold's audit verdicts where it was audited."""
    folder = command_dir(root, "explain")
    reports, verdicts = [], []
    for result in results:
        prefix = f"{result.folder.name}/"
        reports.append(
            result.report.assign(
                overlay=prefix + result.report["overlay"],
                film=prefix + result.report["film"],
            )
        )
        found = read_audit_verdicts(command_dir(root, "audit", result.fold))
        if found is not None:
            verdicts.append(found)
    write_review(
        folder,
        pd.concat(reports, ignore_index=True),
        pd.concat([r.table for r in results], ignore_index=True),
        classes_of(results),
        {"model card": experiment_dir(cfg) / EXPERIMENT_FILES.card_page},
        pd.concat(verdicts, ignore_index=True) if verdicts else None,
        title=f"cxr review: folds {', '.join(str(r.fold) for r in results)}",
    )


def classes_of(results: list[FoldExplanation]) -> list[str]:
    """The classes, in the order of the report's prob_ columns."""
    columns = results[0].report.columns
    return [c.removeprefix("prob_") for c in columns if c.startswith("prob_")]
