"""Every architecture cxr can build, in one plain dict keyed by the config's `model.name`.

Models take greyscale images in [0, 255] (1 channel, or 3 when the config asks)
and do their own preprocessing as their first layers, so a saved model is
self-contained and gradient explanations live in pixel space. Our images are
always grey, so each backbone's ImageNet preprocessing (caffe: BGR channel
means; torch: means and standard deviations; tf: [-1, 1]) is an exact
per-channel affine map, written with plain Keras layers.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cxr.config import Config
from cxr.data.download import RemoteFile, fetch, mirror_url
from cxr.errors import ConfigError, shorten
from cxr.models.applications import backbone
from cxr.models.pna_cnn import FEATURE_LAYER, pna_cnn, tiny_cnn
from cxr.models.vgg16_cardiomegaly import FEATURE_LAYER as VGG_FEATURE_LAYER
from cxr.models.vgg16_cardiomegaly import vgg16_cardiomegaly

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # VGG16 and ResNet50 subtract these after RGB -> BGR
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)

# body(x, num_outputs, cfg, weights) -> logits tensor, where x is the preprocessed input
Body = Callable[[keras.KerasTensor, int, Config, str | None], keras.KerasTensor]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture and where its explanations look."""

    body: Body
    preprocessing: str  # unit | caffe | torch | tf
    explain_layer: str
    min_size: int
    imagenet: RemoteFile | None = (
        None  # the no-top ImageNet weights that keras.applications publishes
    )
    widths: tuple[int, int | None] | None = (
        None  # how many model.widths it takes (fewest, most); None: none
    )

    def check_widths(self, name: str, widths: list[int] | None) -> None:
        """A ConfigError naming what model.widths this architecture takes."""
        if widths is None:
            return
        if self.widths is None:
            raise ConfigError(
                f"model.widths = {widths} is not used by {name}: remove it (set it to null)"
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
            raise ConfigError(f"model.widths = {widths}: {name} takes {count} widths")


def _imagenet(folder: str, filename: str, md5: str) -> RemoteFile:
    return RemoteFile(f"{KERAS_WEIGHTS}/{folder}/{filename}", filename, md5=md5)


MODELS: dict[str, ModelSpec] = {
    "pna_cnn": ModelSpec(
        lambda x, n, c, w: pna_cnn(x, n, c.model.widths, c.model.batchnorm_momentum),
        "unit",
        FEATURE_LAYER,
        32,
        widths=(2, None),  # a stem, then one width per stage
    ),
    "tiny_cnn": ModelSpec(
        lambda x, n, c, w: tiny_cnn(x, n, c.model.widths, c.model.batchnorm_momentum),
        "unit",
        FEATURE_LAYER,
        8,
        widths=(2, 2),
    ),
    "vgg16_cardiomegaly": ModelSpec(
        lambda x, n, c, w: vgg16_cardiomegaly(x, n, w, c.model.dropout),
        "caffe",
        VGG_FEATURE_LAYER,
        256,
        _imagenet(
            "vgg16",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "6d6bbae143d832006294945121d1f1fc",
        ),
    ),
    "resnet50": ModelSpec(
        lambda x, n, c, w: backbone("resnet50", x, n, w),
        "caffe",
        "conv5_block3_out",
        32,
        _imagenet(
            "resnet",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626",
        ),
    ),
    "densenet121": ModelSpec(
        lambda x, n, c, w: backbone("densenet121", x, n, w),
        "torch",
        "relu",
        32,
        _imagenet(
            "densenet",
            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "30ee3e1110167f948a6b9946edeeb738",
        ),
    ),
    "inception_v3": ModelSpec(
        lambda x, n, c, w: backbone("inception_v3", x, n, w),
        "tf",
        "mixed10",
        75,
        _imagenet(
            "inception_v3",
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
    ),
}


def get_model_spec(name: str) -> ModelSpec:
    """Look a model up, or fail with the valid names and the closest match."""
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown model {name!r}; {hint}known models: {', '.join(MODELS)}")


def build_model(cfg: Config, num_outputs: int) -> keras.Model:
    """The configured architecture, flat, preprocessing first, logits last."""
    spec = get_model_spec(cfg.model.name)
    size = cfg.data.image_size
    if size < spec.min_size:
        raise ConfigError(
            f"data.image_size = {size} is too small for {cfg.model.name}: it needs at least "
            f"{spec.min_size}"
        )
    spec.check_widths(cfg.model.name, cfg.model.widths)
    weights = resolve_weights(cfg.model.weights, cfg.model.name, spec)
    inputs = keras.Input((size, size, cfg.data.channels), name="pixels")
    backbone_weights = weights if spec.imagenet is not None else None
    try:
        body = spec.body(preprocess(inputs, spec.preprocessing), num_outputs, cfg, backbone_weights)
        model = keras.Model(inputs, body, name=cfg.model.name)
        if weights is not None and spec.imagenet is None:
            model.load_weights(weights)
    # h5py, zipfile and Keras raise many types for a file that is not these weights
    except Exception as exc:
        if weights is None:
            raise
        raise ConfigError(
            f"model.weights = {cfg.model.weights!r}: cannot load it into {cfg.model.name} "
            f"({type(exc).__name__}: "
            f"{shorten(str(exc))}); give weights saved from this architecture, 'imagenet' or null"
        ) from None
    return model


def preprocess(x: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """Grey [0, 255] -> what the architecture was trained on (exact for grey images)."""
    if mode == "unit":
        return layers.Rescaling(1 / 255, name="scale")(x)
    if x.shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    if mode == "tf":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(x)
    if mode == "caffe":  # grey is its own BGR: channel k minus the k-th BGR mean
        mean, std = np.array(CAFFE_MEAN_BGR), np.ones(3)
    elif mode == "torch":
        mean, std = 255 * np.array(TORCH_MEAN), 255 * np.array(TORCH_STD)
    else:
        raise ValueError(f"unknown preprocessing {mode!r}")
    return layers.Normalization(mean=mean, variance=std**2, name="imagenet_norm")(x)


def resolve_weights(weights: str | None, model_name: str, spec: ModelSpec) -> str | None:
    """None (random), a local file, or 'imagenet' (downloaded once, md5-checked, kept with Keras'
    own files).

    CXR_WEIGHTS_MIRROR=URL fetches the same file names from another server.
    """
    if weights is None:
        return None
    if weights == "imagenet":
        if spec.imagenet is None:
            raise ConfigError(
                f"model.weights = 'imagenet' is not available for {model_name}: use null or a "
                "weights file"
            )
        remote = spec.imagenet
        mirror = os.environ.get("CXR_WEIGHTS_MIRROR")
        if mirror:
            remote = dataclasses.replace(remote, url=mirror_url(mirror, remote.filename))
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        return str(fetch(remote, cache))
    if not Path(weights).is_file():
        raise ConfigError(
            f"model.weights = {weights!r}: no such file (use null, 'imagenet' or a path to a "
            "weights file)"
        )
    return weights
