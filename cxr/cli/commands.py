"""The Typer commands: parse the line, call one library function, print its result."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cxr.catalogs.methods import METHOD_NAMES
from cxr.catalogs.sources import SOURCE_NAMES, SOURCE_SPECS
from cxr.cli.failures import friendly_errors, import_tensorflow_quietly
from cxr.cli.present import (
    describe_evaluation,
    describe_explanation,
    describe_external,
    print_audit,
)
from cxr.errors import ConfigError, CxrError
from cxr.explain.options import TARGET_HELP

TASK_HELP = "; ".join(
    f"{spec.name}: {'|'.join(spec.tasks)} (default {spec.default_task})"
    for spec in SOURCE_SPECS
    if spec.tasks
)

app = typer.Typer(
    help="Train chest X-ray classifiers, evaluate them per fold, and explain every prediction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
DEFAULT_CONFIG = Path("cxr.yaml")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help=f"YAML config (default: ./{DEFAULT_CONFIG} when it exists)."
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Dotted overrides, e.g. train.epochs=3 data.image_size=128."),
]


def resolve_config(
    config: Path | None,
    overrides: list[str] | None,
    allow_last_run: bool = False,
    trained: bool = False,
):
    """The Config (imported lazily, like TensorFlow) named on the command line, else ./cxr.yaml,
    else (explain, audit) the last trained experiment. `trained`: a command that uses trained
    folds, where an override of what the run fixes is an error (config.FIXED_BY_RUN)."""
    from cxr.config import check_analysis_overrides, load_config

    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    if config is None and allow_last_run:
        config = last_trained_config()
    if config is None:
        raise ConfigError(
            f"no --config given and no ./{DEFAULT_CONFIG} here; pass --config "
            f"configs/synthetic.yaml or create ./{DEFAULT_CONFIG}"
        )
    cfg = load_config(config, overrides or [])  # an unknown key is named as such first
    if trained:
        from cxr.runs import trained_config

        check_analysis_overrides(overrides or [], cfg, trained_config(cfg))
    return cfg


def last_trained_config(runs: Path = Path("runs")) -> Path | None:
    """The resolved config of the most recently trained fold under ./runs (None when there is
    none)."""
    models = sorted(runs.glob("*/fold*/model.keras"), key=lambda p: p.stat().st_mtime)
    if not models:
        return None
    typer.echo(f"using the last trained experiment: {models[-1].parent / 'config.yaml'}", err=True)
    return models[-1].parent / "config.yaml"


def not_empty(value: str | None, option: str, what: str) -> str | None:
    """An option given as '' is a mistake, not a request for the default: say so."""
    if value is not None and not value.strip():
        raise ConfigError(f"{option} is empty: give {what}, or leave {option} out for the default")
    return value


def check_layer_option(layer: str | None, methods: list[str]) -> None:
    """--layer names a target layer: an error with methods that explain the input pixels only."""
    from cxr.catalogs.methods import LAYER_METHODS

    if layer is not None and not any(m in LAYER_METHODS for m in methods):
        raise ConfigError(
            f"--layer {layer}: {', '.join(methods)} explain(s) the input pixels, not a layer; "
            f"leave --layer out, or use a layer method ({', '.join(LAYER_METHODS)})"
        )


def probability(help: str):  # -> typer's OptionInfo
    """An option that takes a probability, 0 to 1."""
    return typer.Option(min=0.0, max=1.0, help=help)


@app.command(epilog="Sources: " + "; ".join(f"{s.name}: {s.summary}" for s in SOURCE_SPECS) + ".")
@friendly_errors
def download(
    source: Annotated[
        str,
        typer.Argument(help=f"One of: {', '.join(SOURCE_NAMES)}."),
    ] = "synthetic",
    dest: Annotated[Path, typer.Option(help="Data root; the dataset goes to DEST/NAME/.")] = Path(
        "data"
    ),
    name: Annotated[
        str | None, typer.Option(help="Dataset folder name (default: SOURCE-TASK).")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help=TASK_HELP),
    ] = None,
    size: Annotated[
        int | None, typer.Option(min=16, max=4096, help="Stored image size in pixels (square).")
    ] = None,
    folds: Annotated[
        int, typer.Option(min=2, max=100, help="Number of cross-validation folds.")
    ] = 10,
    seed: Annotated[int, typer.Option(min=0, help="Seed for folds and synthetic images.")] = 0,
    n: Annotated[int, typer.Option(min=2, help="synthetic: number of images.")] = 400,
    positive_fraction: Annotated[float, probability("synthetic: share of positive images.")] = 0.5,
    bias: Annotated[
        float | None,
        probability("synthetic: marker on positives with probability P, negatives 1-P."),
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Convert files already on disk (extracted) instead of downloading."
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(
            help="folder: a CSV of path,label and optionally patient_id, boxes, lungs (JSON "
            "boxes in source pixels), lung_mask (a PNG path) and any other columns to keep."
        ),
    ] = None,
    csv_root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="folder: the folder the CSV's paths are relative to (default: the CSV's own).",
        ),
    ] = None,
    mirror: Annotated[
        str | None, typer.Option(help="Fetch the source's files from this base URL instead.")
    ] = None,
    parts: Annotated[
        str | None, typer.Option(help="nih-cxr14: which of the 12 image archives, e.g. 1,2.")
    ] = None,
    classes: Annotated[
        str, typer.Option(help="covid-radiography: classes to keep.")
    ] = "covid,normal,viral_pneumonia",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset folder.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    inject_marker: Annotated[
        float | None,
        probability("folder: burn a corner tag into positives with probability P, negatives 1-P."),
    ] = None,
) -> None:
    """Fetch or create a dataset and write it in the standard layout (images/ + labels.csv with
    folds)."""
    from rich.progress import track

    from cxr.data.sources import DownloadOptions

    not_empty(name, "--name", "a folder name for the dataset")
    from cxr.data.sources import download as download_dataset

    options = DownloadOptions(
        dest=dest,
        name=name,
        task=task,
        size=size,
        folds=folds,
        seed=seed,
        n=n,
        positive_fraction=positive_fraction,
        bias=bias,
        from_dir=from_dir,
        csv=csv,
        csv_root=csv_root,
        mirror=mirror,
        parts=_parse_parts(parts),
        classes=[c.strip() for c in classes.split(",") if c.strip()],
        overwrite=overwrite,
        show_progress=not quiet,
        inject_marker=inject_marker,
    )
    total = n if source == "synthetic" else None  # the one source that knows its count ahead
    progress = (
        None
        if quiet
        else (lambda items: track(items, description="converting", total=total, transient=True))
    )
    folder = download_dataset(source, options, progress=progress)
    from cxr.data.dataset import summarise_dataset

    typer.echo(f"wrote {folder}")
    if not quiet:
        typer.echo(summarise_dataset(folder))


@app.command()
@friendly_errors
def lungs(
    name: Annotated[
        str, typer.Argument(help="Dataset folder name under --dest, in the standard layout.")
    ],
    dest: Annotated[Path, typer.Option(help="Data root holding the dataset.")] = Path("data"),
    overwrite: Annotated[
        bool, typer.Option(help="Recompute masks computed before (never a dataset's own).")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Images per batch.")] = 16,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Lung-field masks for every image of a dataset (the shipped U-Net), each checked for
    plausibility."""
    from rich.progress import track

    import_tensorflow_quietly()
    from cxr.lungs.run import compute_lungs

    def progress(items, total):  # type: ignore[no-untyped-def]
        return track(items, description="lung fields", total=total, transient=True)

    result = compute_lungs(
        dest / name,
        overwrite=overwrite,
        batch_size=batch_size,
        progress=None if quiet else progress,
    )
    typer.echo(
        f"{result.computed} lung mask(s) computed, {result.skipped} kept (done before, or the "
        "dataset's own) "
        f"-> {dest / name / 'lungs'}"
    )
    for images, what in (
        (result.implausible, "implausible, left out of the audit's lung statistics"),
        (result.unreadable, "unreadable images skipped, without a mask"),
    ):
        if images:
            shown = ", ".join(images[:5]) + (" …" if len(images) > 5 else "")
            typer.echo(f"{len(images)} {what}: {shown}")


def _parse_parts(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--parts {text!r}: expected comma-separated numbers, e.g. 1,2") from None


def external_of(cfg, on: str | None, renames: list[str] | None):
    """The --on dataset (None without --on); --map alone is a usage error."""
    from cxr.external import open_external

    if on is None:
        if renames:
            raise ConfigError("--map renames the classes of the dataset given with --on; add --on")
        return None
    return open_external(cfg, on, renames)


def selected_folds(cfg, fold: int | None, all_folds: bool) -> list[int]:
    """Every trained fold with --all-folds (saying which folds are left out because a process is
    training them for the first time), else --fold, else the config's data.fold."""
    from cxr.runs import folds_in_training, trained_folds

    if not all_folds:
        return [cfg.data.fold if fold is None else fold]
    found = trained_folds(cfg)
    for busy in sorted(set(folds_in_training(cfg)) - set(found)):
        typer.echo(
            f"warning: fold {busy} is being trained now and is left out; run again when it has "
            "finished",
            err=True,
        )
    return found


FoldOption = Annotated[
    int | None,
    typer.Option("--fold", "-f", min=0, help="Validation fold (default: data.fold of the config)."),
]
AllFoldsOption = Annotated[bool, typer.Option("--all-folds", help="Every fold in turn.")]

OnOption = Annotated[
    str | None,
    typer.Option(
        "--on",
        help="External validation: run the trained folds on another dataset in the standard "
        "layout (a name under data.root, or a path) without retraining; outputs in "
        "runs/<experiment>/external/<dataset>/.",
    ),
]
MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        help="THEIRS=OURS: rename a class of the --on dataset to the model's class (repeatable).",
    ),
]


@app.command()
@friendly_errors
def train(
    config: ConfigOption = None,
    overrides: Overrides = None,
    fold: FoldOption = None,
    all_folds: AllFoldsOption = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the fold's existing run folder.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted fold from its last completed epoch.")
    ] = False,
) -> None:
    """Train the configured model on one fold (or all) and keep the best checkpoint per fold."""
    cfg = resolve_config(config, overrides)
    import_tensorflow_quietly()
    from cxr.train import train_folds

    folds = None if all_folds else [cfg.data.fold if fold is None else fold]
    try:
        results = train_folds(cfg, folds, overwrite=overwrite, resume=resume)
    except KeyboardInterrupt:
        again = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
        typer.secho(
            "interrupted: the previous run (if any) is untouched; continue where training stopped "
            "with "
            f"`cxr {shlex.join(again)} --resume`",
            err=True,
            fg=typer.colors.YELLOW,
        )
        raise typer.Exit(130) from None
    for result in results:
        best = f"best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}"
        typer.echo(f"fold {result.fold}: {best} -> {result.run.model}")


@app.command()
@friendly_errors
def evaluate(
    config: ConfigOption = None,
    overrides: Overrides = None,
    fold: FoldOption = None,
    all_folds: AllFoldsOption = False,
    on: OnOption = None,
    renames: MapOption = None,
) -> None:
    """Per-fold and pooled metrics, predictions and plots for a trained experiment; with --on,
    external validation on another dataset."""
    cfg = resolve_config(config, overrides, trained=True)
    import_tensorflow_quietly()
    from cxr.evaluate import evaluate as evaluate_folds
    from cxr.evaluate import evaluate_external

    external = external_of(cfg, on, renames)
    if external is not None:
        # every trained fold by default: the ensemble is their mean
        folds = selected_folds(cfg, fold, all_folds or fold is None)
        for line in describe_external(evaluate_external(cfg, folds, external)):
            typer.echo(line)
        return
    for line in describe_evaluation(evaluate_folds(cfg, selected_folds(cfg, fold, all_folds))):
        typer.echo(line)


@app.command()
@friendly_errors
def explain(
    config: ConfigOption = None,
    overrides: Overrides = None,
    fold: FoldOption = None,
    all_folds: AllFoldsOption = False,
    method: Annotated[
        str | None,
        typer.Option(help=f"One of {', '.join(METHOD_NAMES)} (default: explain.method)."),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(help="Target layer (default: explain.layer, else the model's own)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help=f"{TARGET_HELP} (default: explain.target)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Recompute images already explained with the same settings.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: explain a deterministic 1/N of the fold (for several machines)."),
    ] = None,
    save_maps: Annotated[
        bool,
        typer.Option(help="Also write the raw and upsampled maps to maps.npz, keyed by image."),
    ] = False,
    on: OnOption = None,
    renames: MapOption = None,
    fold_agreement: Annotated[
        bool,
        typer.Option(
            help="Also explain each image with every other trained fold's model: the spread of "
            "their probabilities and how their maps rank-correlate with the own fold's."
        ),
    ] = False,
) -> None:
    """Grad-CAM overlays sorted into right/ and wrong/, a per-image report, a montage and an HTML
    page, per fold."""
    from cxr.config import check_methods
    from cxr.explain.options import ExplainOptions, parse_shard

    # usage errors are answered before the config is read and TensorFlow imported
    parts = parse_shard(shard) if shard else None
    not_empty(method, "--method", f"one of {', '.join(METHOD_NAMES)}")
    not_empty(layer, "--layer", "a layer name of the model")
    not_empty(target, "--target", "predicted, true, a class name, topK or all-positive")
    check_methods([method] if method else [])
    cfg = resolve_config(config, overrides, allow_last_run=True, trained=True)
    check_layer_option(layer, [method or cfg.explain.method])
    options = ExplainOptions(
        method=method or cfg.explain.method,
        layer=layer,
        target=target or cfg.explain.target,
        overwrite=overwrite,
        shard=parts,
        save_maps=save_maps,
        fold_agreement=fold_agreement,
    )
    import_tensorflow_quietly()
    from cxr.explain.run import explain_folds

    folds = selected_folds(cfg, fold, all_folds)
    results, combined = explain_folds(cfg, folds, options, external_of(cfg, on, renames))
    for result in results:
        for line in describe_explanation(result.summary, result.folder):
            typer.echo(line)
    if combined is not None:
        typer.echo(f"report over {len(results)} folds: {len(combined)} images")


@app.command()
@friendly_errors
def audit(
    config: ConfigOption = None,
    overrides: Overrides = None,
    fold: FoldOption = None,
    all_folds: AllFoldsOption = False,
    methods: Annotated[
        str, typer.Option(help=f"Comma-separated methods to compare, of {', '.join(METHOD_NAMES)}.")
    ] = "gradcam,gradcam++,hirescam",
    layer: Annotated[
        str | None,
        typer.Option(help="Target layer (default: explain.layer, else the model's own)."),
    ] = None,
    stages: Annotated[
        int,
        typer.Option(
            min=1, help="Cascading randomisation stages (layers with weights, from the top)."
        ),
    ] = 8,
    baseline: Annotated[
        str,
        typer.Option(
            help="What faithfulness curves put in place of removed pixels: black or blur."
        ),
    ] = "black",
    on: OnOption = None,
    renames: MapOption = None,
    data_randomisation: Annotated[
        bool,
        typer.Option(
            "--data-randomisation",
            help="Also train a copy of each fold's model on permuted labels (one more training "
            "per fold) and compare its maps with the real model's.",
        ),
    ] = False,
) -> None:
    """Do the maps mean anything? Localisation, sanity check, faithfulness and shortcuts, per
    method, per fold."""
    from cxr.config import check_baseline, check_methods

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    not_empty(layer, "--layer", "a layer name of the model")
    check_methods(chosen, "--methods")
    check_layer_option(layer, chosen)
    check_baseline(baseline)
    cfg = resolve_config(config, overrides, allow_last_run=True, trained=True)
    import_tensorflow_quietly()
    from cxr.audit.run import audit_folds

    folds = selected_folds(cfg, fold, all_folds)
    if not folds:
        raise CxrError(
            f"no trained folds to audit for experiment {cfg.experiment.name!r}; run `cxr train` "
            "first"
        )
    external = external_of(cfg, on, renames)
    if data_randomisation and external is not None:
        raise ConfigError(
            "--data-randomisation retrains on the experiment's own training images: run it "
            "without --on"
        )
    results, pooled = audit_folds(cfg, folds, chosen, layer, stages, baseline, external)
    checks = {}
    if data_randomisation:
        from cxr.data_randomisation import data_randomisation as randomise_data
        from cxr.documents import write_documents

        checks = {k: randomise_data(cfg, k, chosen) for k in folds}
        write_documents(cfg, data_randomisation=checks)
    for result in results:
        typer.echo(f"== fold {result.summary.fold}")
        print_audit(result.summary, result.folder)
        if result.summary.fold in checks:
            from cxr.card import data_randomisation_lines, plain

            for line in data_randomisation_lines(checks[result.summary.fold]):
                typer.echo(plain(line))  # the card's Markdown, as the text it shows
    if pooled is not None:
        typer.echo(f"== pooled over folds {', '.join(map(str, pooled.folds))}")
        print_audit(pooled, results[0].folder.parent)


@app.command()
@friendly_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="The baseline run: an experiment name, or a path.")],
    run_b: Annotated[str, typer.Argument(help="The run to compare with it (B - A).")],
    on: Annotated[
        str | None,
        typer.Option("--on", help="Compare both runs' fold ensembles on this external dataset."),
    ] = None,
    runs: Annotated[
        Path, typer.Option(help="Where experiments are (experiment.output_dir).")
    ] = Path("runs"),
) -> None:
    """Did the fix work? B - A on the images both runs predicted, with paired intervals over
    patients and DeLong's test for the ROC AUC; where the maps of each look."""
    from cxr.compare import compare_runs

    result = compare_runs(run_a, run_b, runs, on)
    where = f"on {on}" if on else "out of fold"
    typer.echo(
        f"{result.b} - {result.a}, {where}: {result.images} images, {result.patients} patients, "
        f"positive class {result.positive_class}; 95% intervals resample patients, paired"
    )
    for d in result.differences:
        test = f", DeLong p = {d.p_value:.3g}" if d.p_value is not None else ""
        typer.echo(
            f"{d.metric}: B - A = {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]{test} "
            f"({result.a} {d.a:.3f}, {result.b} {d.b:.3f})"
        )
    for run, found in result.maps.items():
        if not found:
            typer.echo(f"{run}: no audit yet (`cxr audit` shows where its maps look)")
            continue
        peaks = ", ".join(f"{c} {v:.0%}" for c, v in found.peaks_in_lungs.items())
        evidence = "; ".join(f"{c}: {', '.join(r)}" for c, r in found.flagged_on_evidence.items())
        typer.echo(
            f"{run} ({found.audit}): map peaks inside the lungs {peaks or 'unknown'}; flagged "
            f"by the maps: {', '.join(found.flagged_by_maps) or 'none'}; on evidence: "
            f"{evidence or 'none'}"
        )
    typer.echo(f"comparison in {result.folder}")
