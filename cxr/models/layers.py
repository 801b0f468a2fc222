"""Small building blocks shared by the architectures."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn_relu(
    x: keras.KerasTensor, filters: int, stride: int, name: str, momentum: float
) -> keras.KerasTensor:
    """3x3 conv, batch norm, ReLU (as seed 000, conv bias included); the ReLU carries `name`."""
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


def logits_head(x: keras.KerasTensor, num_outputs: int) -> keras.KerasTensor:
    """Global average pooling then a dense layer with no activation, always named `pool` and
    `logits`."""
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_outputs, name="logits", dtype="float32")(x)
