"""Every architecture cxr can build, one entry each, holding every property of the model.

The config's allowed `model.name` values, the models table of docs/training.md and the builder that
cxr.models.build calls all come from here, so adding a model is one body function in
cxr.models.build and one entry below. This module imports nothing heavy: the config reads it
before TensorFlow is imported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from cxr.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ImagenetWeights:
    """The no-top ImageNet weights keras.applications publishes for a backbone."""

    folder: str  # below https://storage.googleapis.com/tensorflow/keras-applications
    filename: str
    md5: str


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str  # what model.name takes
    builder: str  # its body function in cxr.models.build: (x, outputs, cfg, weights) -> logits
    preprocessing: str  # unit | caffe | torch | tf (cxr.models.build.preprocess)
    explain_layer: str  # where its explanations look by default
    min_size: int  # the smallest data.image_size it can take
    after: str  # where the architecture comes from
    notes: str  # for the docs' models table
    imagenet: ImagenetWeights | None = None  # model.weights: imagenet
    widths: tuple[int, int | None] | None = None  # how many model.widths (fewest, most); None: none

    def check_widths(self, widths: list[int] | None) -> None:
        """A ConfigError naming what model.widths this architecture takes."""
        if widths is None:
            return
        if self.widths is None:
            raise ConfigError(
                f"model.widths = {widths} is not used by {self.name}: remove it (set it to null)"
            )
        fewest, most = self.widths
        if len(widths) < fewest or (most is not None and len(widths) > most):
            count = (
                f"exactly {fewest}"
                if fewest == most
                else f"at least {fewest}"
                if most is None
                else f"{fewest} to {most}"
            )
            raise ConfigError(f"model.widths = {widths}: {self.name} takes {count} widths")


BACKBONE_NOTES = (
    "keras.applications backbone built flat, its own ImageNet preprocessing, global average "
    "pooling, logits"
)

MODEL_SPECS = (
    ModelSpec(
        name="pna_cnn",
        builder="pna_cnn_body",
        preprocessing="unit",
        explain_layer="features",
        min_size=32,
        after="seed 000",
        notes=(
            "3×3 stem (16), five stages of [stride-2, stride-1] 3×3 convs (32, 48, 64, 80, 96), "
            "BN + ReLU after each, global average pooling; 16 × 16 last map at 512 px; "
            "`model.widths`, `model.batchnorm_momentum`"
        ),
        widths=(2, None),  # a stem, then one width per stage
    ),
    ModelSpec(
        name="vgg16_cardiomegaly",
        builder="vgg16_cardiomegaly_body",
        preprocessing="caffe",
        explain_layer="block6_conv3",
        min_size=256,
        after="seed 003",
        notes=(
            "VGG16 base (14,714,688 parameters) + three 512-filter 3×3 convs + max-pool, "
            "dense 100 → dropout → dense 20 → dropout → logits"
        ),
        imagenet=ImagenetWeights(
            folder="vgg16",
            filename="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5="6d6bbae143d832006294945121d1f1fc",
        ),
    ),
    ModelSpec(
        name="resnet50",
        builder="applications_body",
        preprocessing="caffe",
        explain_layer="conv5_block3_out",
        min_size=32,
        after="seeds 002, 004",
        notes=BACKBONE_NOTES,
        imagenet=ImagenetWeights(
            folder="resnet",
            filename="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5="4d473c1dd8becc155b73f8504c6f6626",
        ),
    ),
    ModelSpec(
        name="densenet121",
        builder="applications_body",
        preprocessing="torch",
        explain_layer="relu",
        min_size=32,
        after="seeds 002, 004",
        notes=BACKBONE_NOTES,
        imagenet=ImagenetWeights(
            folder="densenet",
            filename="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5="30ee3e1110167f948a6b9946edeeb738",
        ),
    ),
    ModelSpec(
        name="inception_v3",
        builder="applications_body",
        preprocessing="tf",
        explain_layer="mixed10",
        min_size=75,
        after="seeds 002, 004",
        notes=BACKBONE_NOTES,
        imagenet=ImagenetWeights(
            folder="inception_v3",
            filename="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            md5="bcbd6486424b2319ff4ef7d526e38f63",
        ),
    ),
    ModelSpec(
        name="tiny_cnn",
        builder="tiny_cnn_body",
        preprocessing="unit",
        explain_layer="features",
        min_size=16,  # the config's floor for data.image_size (it would build at 8)
        after="tests",
        notes="two small stages",
        widths=(2, 2),
    ),
)
MODELS_BY_NAME = {spec.name: spec for spec in MODEL_SPECS}
MODEL_NAMES = tuple(MODELS_BY_NAME)


def models_markdown() -> str:
    """The models table of docs/training.md, made from the entries (a test checks the page)."""
    rows = [
        "| `model.name` | after | explains at | smallest size | ImageNet weights | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for spec in MODEL_SPECS:
        imagenet = "yes" if spec.imagenet else "no"
        rows.append(
            f"| `{spec.name}` | {spec.after} | `{spec.explain_layer}` | {spec.min_size} px | "
            f"{imagenet} | {spec.notes} |"
        )
    return "\n".join(rows)


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up, or fail with the valid names and the closest match."""
    if name in MODELS_BY_NAME:
        return MODELS_BY_NAME[name]
    close = difflib.get_close_matches(name, list(MODELS_BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown model {name!r}; {hint}known models: {', '.join(MODELS_BY_NAME)}")
