"""One typed, frozen, validated configuration for every command.

The schema below holds the defaults; YAML files state only what differs. Errors
become one line that names the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cxr.catalogs.methods import METHOD_NAMES
from cxr.catalogs.models import MODEL_NAMES
from cxr.errors import ConfigError, shorten

FAITHFULNESS_BASELINES = ("black", "blur")  # what removed pixels become in deletion / insertion

LoosePath = Annotated[Path, Field(strict=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ExperimentConfig(_Section):
    """Names the run; `output_dir/name/fold<K>/` is where training writes."""

    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, ge=0)
    output_dir: LoosePath = Path("runs")


class DataConfig(_Section):
    """Which dataset (a folder under `root` written by `cxr download`) and how to feed it."""

    root: LoosePath = Path("data")
    dataset: str = Field("synthetic-pneumonia", min_length=1)
    classes: list[str] | None = Field(None, min_length=2)
    positive_class: str | None = None
    multi_label: bool = False
    image_size: int = Field(256, ge=16, le=2048)
    channels: Literal[1, 3] = 1
    fold: int = Field(0, ge=0)
    # false: stream from disk; true or 'memory': decoded images in memory; a folder: cache files
    cache: bool | str = False
    # what lies outside the lungs and the mediastinum (cxr.data.lungfields), in training and in
    # every later read of the images: kept, blurred heavily, or filled with the image's mean
    outside_lungs: Literal["keep", "blur", "fill"] = "keep"
    # lungs: each film cropped to its lung fields' bounding box (cxr.data.crop), widened by
    # crop_margin of the film's side, then resized to image_size; maps are drawn back onto the film
    crop: Literal["none", "lungs"] = "none"
    crop_margin: float = Field(0.05, ge=0, le=0.5)

    @field_validator("cache")
    @classmethod
    def _cache_place(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not value.strip():
            raise ValueError("use false, true, memory, or a folder for cache files")
        return value

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("class names must be unique")
        return value

    @property
    def dataset_dir(self) -> Path:
        return self.root / self.dataset

    @property
    def needs_lungs(self) -> bool:
        """Whether every read of the images needs their lung fields (crop, outside_lungs)."""
        return self.crop != "none" or self.outside_lungs != "keep"


class ModelConfig(_Section):
    """Which architecture (one of cxr.catalogs.models) and its options."""

    name: Literal[MODEL_NAMES] = "pna_cnn"  # type: ignore[valid-type]
    weights: str | None = None
    widths: list[Annotated[int, Field(ge=1)]] | None = None
    batchnorm_momentum: float = Field(0.99, gt=0, lt=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class TrainConfig(_Section):
    """Optimisation settings; seed 000 uses Adam 2e-4."""

    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(16, ge=1, le=4096)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    class_weights: bool = True
    flip: bool = True
    # with this probability per training image, one corner square or border strip is filled with
    # the image's mean: breaks a tag or marker there as a cue (what cxr audit flags on evidence)
    erase_border: float = Field(0.0, ge=0, le=1)
    monitor: Literal["val_auc", "val_accuracy", "val_loss"] = "val_auc"
    early_stopping_patience: int | None = Field(5, ge=1)
    # constant; plateau: halve when validation loss stalls 2 epochs; cosine: down to 0 over epochs
    lr_schedule: Literal["constant", "plateau", "cosine"] = "constant"
    mixed_precision: bool = False
    xla: bool = False
    # MirroredStrategy over these; None: every GPU when there are several
    devices: list[str] | None = Field(None, min_length=2)
    # mlflow: log params, epochs, metrics and artifacts to MLflow (cxr.tracking); none: do not
    tracking: Literal["none", "mlflow"] = "none"


# explain.overlay_format -> the overlay's suffix and Pillow's save options. Encoding is most of an
# overlay's cost: on a 512 px radiograph PNG takes 15 ms and 300 KB, JPEG 1 ms and 60 KB.
OVERLAY_FORMATS: dict[str, tuple[str, dict]] = {
    # quality 95 without chroma subsampling: thin box outlines and colour edges stay sharp
    "jpeg": (".jpg", {"format": "JPEG", "quality": 95, "subsampling": 0}),
    # lossless; Huffman-only deflate is faster than level 1 and smaller on radiograph overlays
    "png": (".png", {"format": "PNG", "compress_level": 1, "compress_type": 2}),
}


class ExplainConfig(_Section):
    """Explanation defaults; `layer: null` finds the last spatial layer itself."""

    method: Literal[METHOD_NAMES] = "gradcam"  # type: ignore[valid-type]
    layer: str | None = None
    target: str = Field("predicted", min_length=1)
    batch_size: int = Field(32, ge=1, le=4096)
    colormap: str = "jet"
    alpha: float = Field(0.4, ge=0, le=1)
    overlay_format: Literal[tuple(OVERLAY_FORMATS)] = "jpeg"  # type: ignore[valid-type]
    xla: bool = False  # compile the maps with XLA (jit_compile)
    mixed_precision: bool = False  # explain a float16 copy of the model (GPU only)
    occlusion_patch: float = Field(0.125, gt=0, le=1)  # the square's side, a share of the image
    occlusion_stride: float = Field(0.0625, gt=0, le=1)  # its step, likewise
    rise_masks: int = Field(512, ge=8, le=100_000)  # random masks per image (one forward pass each)
    # outline the lung fields (the dataset's own, or from `cxr lungs`) on the overlays
    lungs: bool = False

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, value: str) -> str:
        import matplotlib

        if value not in matplotlib.colormaps:
            close = difflib.get_close_matches(value, list(matplotlib.colormaps), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown matplotlib colour map{hint}")
        return value


class EvaluateConfig(_Section):
    """How metrics are reported: bootstrap intervals over patients and calibration bins."""

    bootstrap: int = Field(2000, ge=0, le=100_000)  # resamples of patients; 0: no intervals
    calibration_bins: int = Field(10, ge=2, le=100)  # equal-count bins for ECE and the diagram
    # the operating point a screening use asks for, chosen out of fold
    target_sensitivity: float = Field(0.9, gt=0, lt=1)
    # temperature: also report probabilities rescaled by a temperature fitted on the other folds
    calibrate: Literal["none", "temperature"] = "none"


class AuditConfig(_Section):
    """How many images the model-heavy parts of `cxr audit` take (the rest reads the whole fold)."""

    # drawn across outcomes: the sanity check, deletion/insertion, map properties and ROAD
    sample: int = Field(16, ge=2, le=4096)
    # per true class, with plausible lung fields: the regions filled in turn
    intervention_images: int = Field(32, ge=1, le=100_000)


class Config(_Section):
    """The whole configuration, one section per stage."""

    experiment: ExperimentConfig = ExperimentConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    explain: ExplainConfig = ExplainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    audit: AuditConfig = AuditConfig()


# The settings rule for the commands that use a trained fold (evaluate, explain, audit): what the
# model was trained with comes from the fold's saved config.yaml and cannot be overridden; what
# describes the analysis (data.positive_class, data.fold, explain.*, evaluate.*, audit.*,
# experiment.*) comes
# from the command line.
FIXED_BY_RUN = (
    "model",
    "train",
    "data.root",
    "data.dataset",
    "data.classes",
    "data.multi_label",
    "data.image_size",
    "data.channels",
    "data.cache",
    "data.outside_lungs",
    "data.crop",
    "data.crop_margin",
)


def fixed_by_run(key: str) -> str | None:
    """The FIXED_BY_RUN entry that covers a dotted key (None: an analysis setting)."""
    return next((f for f in FIXED_BY_RUN if key == f or key.startswith(f + ".")), None)


def check_analysis_overrides(
    overrides: list[str] | tuple[str, ...], cfg: Config, trained: Config | None
) -> None:
    """Refuse an override that changes what the trained run fixes, instead of silently ignoring
    it (restating the run's own value is fine; `trained` None: no run to compare with yet)."""
    if trained is None:
        return
    mine, theirs = cfg.model_dump(mode="json"), trained.model_dump(mode="json")
    for item in overrides:
        key = parse_override(item)[0]
        if not fixed_by_run(key):
            continue
        wanted, was = mine, theirs
        for part in key.split("."):
            wanted, was = wanted[part], was[part]
        if wanted != was:
            raise ConfigError(
                f"override {shorten(item, 100)!r}: {key} is fixed by the trained run, which has "
                f"{shorten(repr(was), 100)}; the model, its training and the data it was trained "
                "on cannot change after training (model.*, train.*, data.root, dataset, classes, "
                "multi_label, image_size, channels, cache); analysis settings can "
                "(data.positive_class, explain.*): retrain to change the others"
            )


def with_analysis_settings(trained: Config, cfg: Config) -> Config:
    """A trained fold's saved config with the command line's analysis settings: the one config
    evaluate, explain and audit use for that fold."""
    # data.fold stays the run's: on the command line it only chooses which fold to open
    data = trained.data.model_copy(update={"positive_class": cfg.data.positive_class})
    return trained.model_copy(
        update={
            "data": data,
            "explain": cfg.explain,
            "evaluate": cfg.evaluate,
            "audit": cfg.audit,
            "experiment": cfg.experiment,
        }
    )


def fixed_differences(trained: Config, cfg: Config) -> list[str]:
    """What a command's config says otherwise than the run about the model and its input (the run
    wins; training-only settings are left out)."""

    def leaves(data: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix: data}
        return {
            k: v for key, value in data.items() for k, v in leaves(value, f"{prefix}{key}.").items()
        }

    ours, theirs = leaves(trained.model_dump(mode="json")), leaves(cfg.model_dump(mode="json"))
    return [
        f"{key.rstrip('.')}: {theirs[key]!r} (trained with {ours[key]!r})"
        for key in ours
        if fixed_by_run(key.rstrip(".")) not in (None, "train", "data.cache")
        and ours[key] != theirs.get(key)
    ]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1), reading 2e-4 and 1E5 as numbers as YAML 1.2 does: 1.1
    needs a dot (2.0e-4) and takes 2e-4 for text, the notation people write learning rates in."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str):  # -> what the YAML holds
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader: no Python objects


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read a YAML file (or only defaults when `path` is None), apply `a.b=value` overrides,
    validate."""
    raw: dict[str, Any] = {} if path is None else read_yaml(Path(path))
    override_keys: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value, item)
        override_keys[key] = item
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path, override_keys)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping, turning every way it can fail into a ConfigError."""
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (give an existing YAML file, e.g. "
            "configs/synthetic.yaml)"
        )
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: unreadable YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    if data is None:
        return {}
    check_expansion(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """Split `a.b=value`; the value is parsed as YAML (so 3 is an int, [1, 2] a list), never
    eval'd."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=3")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {shorten(item, 200)!r}: the value is not valid YAML") from None
    check_expansion(value, f"override {shorten(item, 100)!r}")
    return key, value


MAX_CONFIG_NODES = 10_000  # a whole config has a few hundred values; YAML aliases can make billions


def check_expansion(data: Any, where: str) -> None:
    """Refuse YAML whose aliases expand into more values than any config needs (an alias bomb)."""
    seen, stack = 0, [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{where}: more than {MAX_CONFIG_NODES} values once YAML aliases are expanded; "
                "a config needs a few hundred at most (remove the repeated aliases)"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)


def set_dotted(raw: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set raw[a][b] = value for key 'a.b', creating sections as needed."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"override {item!r}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def describe_validation_error(
    exc: ValidationError, path: str | Path | None, override_keys: dict[str, str]
) -> str:
    """One line for the first problem: where, which key, the bad value, what is allowed."""
    errors = exc.errors()
    error = errors[0]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    loc = tuple(str(part) for part in error["loc"])
    key = ".".join(loc)
    source = _source_of(loc, path, override_keys)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{source}: unknown key {key!r}; {hint}allowed keys here: {', '.join(allowed)}{more}"
    value = shorten(repr(error.get("input")), 200)
    message = shorten(error["msg"].removeprefix("Value error, "), 300)
    return f"{source}: {key} = {value} is not allowed: {message}{more}"


def _source_of(loc: tuple[str, ...], path: str | Path | None, override_keys: dict[str, str]) -> str:
    key = ".".join(loc)
    for length in range(len(loc), 0, -1):
        item = override_keys.get(".".join(loc[:length]))
        if item is not None:
            return f"override {item!r}"
    for override_key, item in override_keys.items():
        if override_key.startswith(key + "."):
            return f"override {item!r}"
    return str(path) if path is not None else "config"


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def dump_config(cfg: Config) -> str:
    """The resolved configuration as YAML, for run folders."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def check_methods(names: list[str], option: str = "--method") -> None:
    """Every name an explanation method (before any TensorFlow import), or one line naming it."""
    for name in names:
        if name not in METHOD_NAMES:
            close = difflib.get_close_matches(name, METHOD_NAMES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{option} {shorten(repr(name), 60)}: not an explanation method; {hint}known: "
                f"{', '.join(METHOD_NAMES)}"
            )


def check_baseline(kind: str) -> None:
    if kind not in FAITHFULNESS_BASELINES:
        raise ConfigError(
            f"faithfulness baseline {kind!r}: use {' or '.join(FAITHFULNESS_BASELINES)}"
        )
