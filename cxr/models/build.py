"""Builds the architectures of cxr.catalogs.models, keyed by the config's `model.name`.

Models take greyscale images in [0, 255] (1 channel, or 3 when the config asks)
and do their own preprocessing as their first layers, so a saved model is
self-contained and gradient explanations live in pixel space. Our images are
always grey, so each backbone's ImageNet preprocessing (caffe: BGR channel
means; torch: means and standard deviations; tf: [-1, 1]) is an exact
per-channel affine map, written with plain Keras layers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cxr.catalogs.models import ModelSpec, get_model_spec
from cxr.config import Config
from cxr.data.download import RemoteFile, fetch, mirror_url
from cxr.errors import ConfigError, shorten
from cxr.models.applications import backbone
from cxr.models.pna_cnn import pna_cnn, tiny_cnn
from cxr.models.vgg16_cardiomegaly import vgg16_cardiomegaly

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # VGG16 and ResNet50 subtract these after RGB -> BGR
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def pna_cnn_body(x: keras.KerasTensor, n: int, cfg: Config, weights: str | None):
    return pna_cnn(x, n, cfg.model.widths, cfg.model.batchnorm_momentum)


def tiny_cnn_body(x: keras.KerasTensor, n: int, cfg: Config, weights: str | None):
    return tiny_cnn(x, n, cfg.model.widths, cfg.model.batchnorm_momentum)


def vgg16_cardiomegaly_body(x: keras.KerasTensor, n: int, cfg: Config, weights: str | None):
    return vgg16_cardiomegaly(x, n, weights, cfg.model.dropout)


def applications_body(x: keras.KerasTensor, n: int, cfg: Config, weights: str | None):
    return backbone(cfg.model.name, x, n, weights)


Body = Callable[[keras.KerasTensor, int, Config, str | None], keras.KerasTensor]


def body_of(spec: ModelSpec) -> Body:
    """The catalog entry's body function, named by its `builder`."""
    return globals()[spec.builder]


def imagenet_file(spec: ModelSpec) -> RemoteFile | None:
    """Where the backbone's published ImageNet weights are, md5 included."""
    if spec.imagenet is None:
        return None
    found = spec.imagenet
    return RemoteFile(
        f"{KERAS_WEIGHTS}/{found.folder}/{found.filename}", found.filename, md5=found.md5
    )


def build_model(cfg: Config, num_outputs: int) -> keras.Model:
    """The configured architecture, flat, preprocessing first, logits last."""
    spec = get_model_spec(cfg.model.name)
    size = cfg.data.image_size
    if size < spec.min_size:
        raise ConfigError(
            f"data.image_size = {size} is too small for {cfg.model.name}: it needs at least "
            f"{spec.min_size}"
        )
    spec.check_widths(cfg.model.widths)
    weights = resolve_weights(cfg.model.weights, cfg.model.name, spec)
    inputs = keras.Input((size, size, cfg.data.channels), name="pixels")
    backbone_weights = weights if spec.imagenet is not None else None
    try:
        body = body_of(spec)(
            preprocess(inputs, spec.preprocessing), num_outputs, cfg, backbone_weights
        )
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
        remote = imagenet_file(spec)
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
