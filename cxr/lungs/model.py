"""A compact U-Net that segments both lung fields, and the shipped weights.

The network takes 8-bit grey radiographs squashed to INPUT_SIZE x INPUT_SIZE (the training images
were squashed squares too) and returns one logit per pixel: lung or not. It normalises its own
input, so a saved model is self-contained. The shipped model (lung_unet.keras, package data) was
trained by scripts/train_lung_model.py on the Montgomery and Shenzhen sets; docs/lungs.md gives
its figures and terms.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import keras
import numpy as np
from keras import layers

from cxr.errors import DataError

INPUT_SIZE = 128
WIDTHS = (12, 24, 48, 96, 160)  # 0.95 M parameters, 3.8 MB of weights
SHIPPED = "lung_unet.keras"


def _block(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_unet(size: int = INPUT_SIZE, widths: tuple[int, ...] = WIDTHS) -> keras.Model:
    """Two-conv blocks with max pooling, a mirrored decoder with skip connections, 1x1 logits."""
    inputs = keras.Input((size, size, 1), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inputs)
    skips = []
    for level, filters in enumerate(widths[:-1]):
        x = _block(x, filters, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"pool{level}")(x)
    x = _block(x, widths[-1], "bottom")
    for level in reversed(range(len(widths) - 1)):
        x = layers.Conv2DTranspose(widths[level], 2, strides=2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, widths[level], f"dec{level}")
    logits = layers.Conv2D(1, 1, name="lung_logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name="lung_unet")


def load_lung_model() -> keras.Model:
    """The shipped lung-field model (package data), or a DataError saying how to make one."""
    path = resources.files("cxr.lungs") / SHIPPED
    if not path.is_file():
        raise DataError(
            f"the lung-field model {SHIPPED} is not in this installation of cxr; "
            "train one with scripts/train_lung_model.py"
        )
    with resources.as_file(path) as file:
        return keras.models.load_model(file, compile=False)


def to_input(images: list[np.ndarray], size: int = INPUT_SIZE) -> np.ndarray:
    """Grey uint8 images of any size -> (N, size, size, 1) float32, squashed as in training
    (one resize for each group of images of the same size)."""
    import tensorflow as tf

    out = np.empty((len(images), size, size, 1), dtype=np.float32)
    for where in same_shape_groups(images).values():
        stacked = tf.constant(np.stack([images[i] for i in where]))
        out[where] = squash()(stacked, tf.constant((size, size))).numpy()
    return out


@cache
def squash():
    """uint8 (N, H, W), size -> float32 (N, size, size, 1), as one traced function whose shapes
    generalise (the eager resize and its float copy in numpy took 1.6 times as long)."""
    import tensorflow as tf

    return tf.function(
        lambda films, size: tf.image.resize(
            tf.cast(films, tf.float32)[..., None], size, antialias=True
        ),
        autograph=False,
        reduce_retracing=True,
    )


def same_shape_groups(images: list[np.ndarray]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape[:2], []).append(i)
    return groups


_FORWARD: dict[int, object] = {}


def forward(model: keras.Model):
    """The model's forward pass as one traced function (any batch size): Keras's predict() builds
    a data adapter and a progress loop on every call, the largest cost on small batches."""
    import tensorflow as tf

    if id(model) not in _FORWARD:
        size = model.input_shape[1]
        _FORWARD.clear()  # one model at a time
        _FORWARD[id(model)] = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)],
            reduce_retracing=True,
        )
    return _FORWARD[id(model)]


def predict_masks(model: keras.Model, images: list[np.ndarray]) -> list[np.ndarray]:
    """Boolean lung masks at each image's own size (probabilities upsampled, then p >= 0.5)."""
    import tensorflow as tf

    probabilities = tf.sigmoid(forward(model)(tf.constant(to_input(images, model.input_shape[1]))))
    masks: list[np.ndarray] = [np.empty(0)] * len(images)
    for shape, where in same_shape_groups(images).items():
        upsampled = tf.image.resize(tf.gather(probabilities, where), shape, method="bilinear")
        for i, prob in zip(where, upsampled.numpy()[..., 0], strict=True):
            masks[i] = prob >= 0.5
    return masks
