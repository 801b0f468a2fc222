"""The `cxr` command line: parse, call one library function, turn our errors into one red line.

Exit codes: 0 success, 1 data/runtime error, 2 configuration or usage error.
Any exception that is not a CxrError is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cxr.audit.results import AuditSummary, RegionGroup, Regions
from cxr.catalogs.methods import METHOD_NAMES
from cxr.catalogs.sources import SOURCE_NAMES, SOURCE_SPECS
from cxr.errors import ConfigError, CxrError, shorten
from cxr.explain.options import TARGET_HELP
from cxr.runs import AUDIT_FILES

# TensorFlow's C++ start-up lines (CUDA probing, oneDNN, CPU features) are noise to a CLI user;
# set TF_CPP_MIN_LOG_LEVEL yourself (0) to see them. Set before any command imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe its devices with the C++ side's stderr closed: TensorFlow 2.19+
    writes its start-up lines before its own log level applies (tensorflow#100442). A failed
    import still raises, after stderr is back; with TF_CPP_MIN_LOG_LEVEL below 3 nothing is
    hidden."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    """Print a CxrError as one red line on stderr and exit with its code, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CxrError as exc:
            typer.secho(f"error: {shorten(str(exc), 2000)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.secho(
                "interrupted: nothing half-written was left under a final name",
                err=True,
                fg=typer.colors.YELLOW,
            )
            raise typer.Exit(130) from None
        # a full disk, a read-only folder, a vanished file: the user's to fix, not a bug
        except OSError as exc:
            typer.secho(f"error: {describe_os_error(exc)}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None
        except Exception as exc:
            # TensorFlow's out-of-memory (by name: no TF import here)
            if type(exc).__name__ != "ResourceExhaustedError":
                raise
            typer.secho(
                "error: out of memory on the device: lower train.batch_size (train) or "
                "explain.batch_size (evaluate, explain, audit: every batch of a trained model), "
                "and run again",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def describe_os_error(exc: OSError) -> str:
    """One line: which path, what went wrong, what to do."""
    path = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"no space left to write {path}: free space on that disk "
            "(or give another output folder) and run again"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"not allowed to write or read {path} ({exc.strerror}): "
            "check its permissions, or give another folder"
        )
    return f"cannot read or write {path}: {shorten(exc.strerror or str(exc))}"


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


def describe_metrics(metrics: dict) -> str:
    """ROC AUC and accuracy, then what a reader of a binary test asks next: sensitivity, specificity
    and the confusion counts for the positive class; each with its 95% interval over patients when
    there is one, and the calibration."""
    ci95 = metrics.get("ci95", {})

    def value(name: str, digits: int = 3) -> str:
        text = figure(metrics, name, digits)
        if name in ci95 and defined(metrics[name]):
            low, high = ci95[name]
            text += f" [{figure(ci95, name, digits, low)}, {figure(ci95, name, digits, high)}]"
        return text

    text = f"ROC AUC {value('roc_auc')}, accuracy {value('accuracy')} (n = {metrics['n']})"
    if "positive_class" in metrics:
        # rows true, columns predicted, in class order
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        if metrics["classes"].index(metrics["positive_class"]) == 0:
            (tp, fn), (fp, tn) = metrics["confusion_matrix"]
        text += (
            f"; {metrics['positive_class']}: sensitivity {value('sensitivity')}, "
            f"specificity {value('specificity')} (TP {tp}, FN {fn}, TN {tn}, FP {fp})"
        )
    if "calibration" in metrics:
        found = metrics["calibration"]
        text += f"; ECE {found['ece']:.3f}, Brier {found['brier']:.3f}"
    return text


def defined(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


UNDEFINED_BECAUSE = {"precision": "nothing called positive"}  # else: one class only


def figure(metrics: dict, name: str, digits: int = 3, value: object = "") -> str:
    """A metric to `digits` places, or why it is undefined (NaN in memory, null in JSON): a set
    with one class has no sensitivity or ROC AUC, never a 0.0."""
    value = metrics.get(name) if value == "" else value
    if defined(value):
        return f"{value:.{digits}f}"
    return f"undefined ({UNDEFINED_BECAUSE.get(name, 'one class')})"


def describe_extras(metrics: dict) -> list[str]:
    """Patient-level figures and out-of-fold operating points, where the metrics have them."""
    lines = []
    for how, found in metrics.get("patients", {}).items():
        lines.append(
            f"per patient ({how} of the images' probabilities, {found['n']} patients): ROC AUC "
            f"{figure(found, 'roc_auc')}, sensitivity {figure(found, 'sensitivity')}, specificity "
            f"{figure(found, 'specificity')}"
        )
    scaled = metrics.get("temperature")
    if scaled:
        before, after = scaled["before"], scaled["after"]
        temps = ", ".join(f"{t:.2f}" for t in scaled["per_fold"].values())
        lines.append(
            f"temperature scaling (fitted on the other folds, T = {temps}): ECE "
            f"{before['ece']:.3f} -> {after['ece']:.3f}, Brier {before['brier']:.3f} -> "
            f"{after['brier']:.3f}, NLL {before['nll']:.3f} -> {after['nll']:.3f}"
        )
    groups = metrics.get("subgroups", [])
    if groups:
        shown = "; ".join(
            f"{g['column']}={g['value']} {g['roc_auc']:.3f} [{g['ci95_low']:.3f}, "
            f"{g['ci95_high']:.3f}] ({g['images']})"
            for g in groups
        )
        lines.append(f"ROC AUC by subgroup [95% CI] (images): {shown}")
        below = [f"{g['column']}={g['value']}" for g in groups if g["below_overall"]]
        lines.append(
            "subgroups whose interval lies wholly below the overall AUC: "
            + (", ".join(below) if below else "none")
        )
    for name, point in metrics.get("operating_points", {}).items():
        if name == "0.5":
            continue
        what = "Youden point" if name == "youden" else f"sensitivity >= {name.split('_')[1]}"
        thresholds = ", ".join(f"{t:.3f}" for t in point["thresholds"].values())
        lines.append(
            f"threshold at the {what}, chosen on the other folds ({thresholds}): sensitivity "
            f"{point['sensitivity']:.3f}, specificity {point['specificity']:.3f}"
        )
    return lines


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
        result = evaluate_external(cfg, folds, external)
        for k, metrics in result.per_fold.items():
            typer.echo(f"fold {k} model on {on}: {describe_metrics(metrics)}")
        models = f"{len(folds)} model{'s' if len(folds) > 1 else ''}"
        typer.echo(
            f"fold ensemble ({models}, mean probability) on {on}: {describe_metrics(result.pooled)}"
        )
        for line in describe_extras(result.pooled):
            typer.echo(line)
        typer.echo(f"external validation reports in {result.folder}")
        return
    folds = selected_folds(cfg, fold, all_folds)
    result = evaluate_folds(cfg, folds)
    for k, metrics in result.per_fold.items():
        typer.echo(f"fold {k}: validation {describe_metrics(metrics)}")
        if len(folds) == 1:
            for line in describe_extras(metrics):
                typer.echo(line)
    if len(folds) > 1:
        auc = result.summary["roc_auc"]
        typer.echo(f"pooled over {len(folds)} folds: {describe_metrics(result.pooled)}")
        typer.echo(f"ROC AUC per fold {auc['mean']:.3f} ± {auc['std']:.3f}")
        for line in describe_extras(result.pooled):
            typer.echo(line)
    typer.echo(f"reports in {result.folder} and each fold's evaluation/")


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
        s = result.summary
        counts = f"{s['images']} images, {s['right']} right, {s['wrong']} wrong"
        if s.get("rows", s["images"]) != s["images"]:  # several classes per image
            counts = f"{s['images']} images, {s['rows']} (image, class) rows: {s['right']} right, "
            counts += f"{s['wrong']} wrong"
        counts += f", {s['empty_maps']} empty maps"
        typer.echo(f"fold {result.fold}: {counts} -> {result.folder}")
        if "localisation" in s:
            loc = s["localisation"]
            typer.echo(
                f"  map peak inside the finding's box for {loc['peak_in_box']:.0%} of "
                f"{loc['true_positives_with_boxes']} true positives "
                f"(image centre: {loc['centre_baseline']:.0%}, random pixel: "
                f"{loc['random_baseline']:.0%})"
            )
        agreement = s.get("fold_agreement")
        if agreement:
            typer.echo(
                f"  fold agreement with folds {agreement['other_folds']}: median rank correlation "
                f"of the maps {agreement['median_rank_correlation']:.2f}, median spread of the "
                f"probability {agreement['median_probability_std']:.3f}; maps that disagree "
                f"most: {', '.join(agreement['most_disagreeing'][:5])} (fold_agreement.csv)"
            )
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
        from cxr.data_randomisation import summary_of
        from cxr.documents import write_documents

        checks = {k: summary_of(randomise_data(cfg, k, chosen)) for k in folds}
        write_documents(cfg)
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
        peaks = ", ".join(f"{c} {v:.0%}" for c, v in found["peaks_in_lungs"].items())
        evidence = "; ".join(
            f"{c}: {', '.join(r)}" for c, r in found["flagged_on_evidence"].items()
        )
        typer.echo(
            f"{run} ({found['audit']}): map peaks inside the lungs {peaks or 'unknown'}; flagged "
            f"by the maps: {', '.join(found['flagged_by_maps']) or 'none'}; on evidence: "
            f"{evidence or 'none'}"
        )
    typer.echo(f"comparison in {result.folder}")


def region_line(name: str, group: RegionGroup) -> str:
    """Where one group's maps peak and how much of their energy lies outside, beside a uniform
    map."""
    from cxr.data.regions import OFF_CHEST, REGION_WORDS

    peaks = group.peaks
    top = max(OFF_CHEST, key=lambda r: peaks[r].share - peaks[r].uniform)
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
    for method, found in summary.localisation.items():
        hit = found.scores["pointing_hit"]
        typer.echo(
            f"{method:>12}: pointing game {hit.mean:.2f} [{hit.low:.2f}, {hit.high:.2f}], "
            f"IoU@otsu {found.scores['iou@otsu'].mean:.2f}, "
            f"T(IoBB)@0.25 {found.scores['t(iobb)@0.25'].mean:.2f} "
            f"({found.images} images with boxes)"
        )
    if summary.best_method:
        typer.echo(f"best localisation: {summary.best_method}")
    elif summary.localisation:
        typer.echo("best localisation: no method beat both baselines (random map, centre map)")
    pooled = summary.fold is None
    for method, check in summary.sanity.items():
        verdict = "passes" if check.passes else "FAILS"
        if pooled:
            verdict += f" (in {check.folds_passing} of {len(summary.folds)} folds)"
        typer.echo(
            f"{method:>12}: randomised model's maps rank-correlate "
            f"{'on average ' if pooled else ''}{check.last_stage_spearman:.2f} with the trained "
            f"ones after {check.stages} stages (unrelated images: "
            f"{check.unrelated_pairs_spearman:.2f}): {verdict}"
        )
    for method, f in summary.faithfulness.items():
        typer.echo(
            f"{method:>12}: deletion area {f.deletion_auc:.3f} (lower is better), insertion "
            f"area {f.insertion_auc:.3f} ({f.baseline} baseline, {f.images} images)"
        )
    for method, found in summary.maps.items():
        logit = (
            ""
            if found.random_logit_spearman != found.random_logit_spearman  # NaN: a baseline map
            else f", random-logit rank correlation {found.random_logit_spearman:.2f}, "
            f"max-sensitivity {found.max_sensitivity:.2f}"
        )
        typer.echo(
            f"{method:>12}: average drop {found.average_drop:.1f}%, increase in confidence "
            f"{found.increase_in_confidence:.0f}%, sparseness {found.sparseness:.2f}, complexity "
            f"{found.complexity:.2f}{logit}"
        )
    for method, road in summary.road.items():
        typer.echo(
            f"{method:>12}: ROAD, target probability with "
            f"{road.shares[0]:.0%}-{road.shares[-1]:.0%} of pixels imputed: most relevant first "
            f"{road.morf:.3f} (lower is better), least relevant first {road.lerf:.3f}, gap "
            f"{road.gap:+.3f} (higher is better)"
        )
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


if __name__ == "__main__":
    app()
