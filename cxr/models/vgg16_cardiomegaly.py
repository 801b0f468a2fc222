"""The VGG16-based cardiomegaly model of seed 003.

The VGG16 convolutional base (14,714,688 parameters), three extra 3x3 convs
with 512 filters ('valid' padding) and a 2x2 max-pool, then flatten, dense 100,
dropout 0.1, dense 20, dropout 0.1, logits. Built flat (`input_tensor=`) so
every VGG layer stays reachable by name for explanations.
"""

from __future__ import annotations

import keras
from keras import layers

FEATURE_LAYER = "block6_conv3"


def vgg16_cardiomegaly(
    x: keras.KerasTensor, num_outputs: int, weights: str | None = None, dropout: float = 0.1
) -> keras.KerasTensor:
    x = keras.applications.VGG16(include_top=False, weights=weights, input_tensor=x).output
    for i in (1, 2, 3):
        x = layers.Conv2D(512, 3, padding="valid", activation="relu", name=f"block6_conv{i}")(x)
    x = layers.MaxPooling2D(2, name="block6_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(100, activation="relu", name="first_dense")(x)
    x = layers.Dropout(dropout, name="dropout_1")(x)
    x = layers.Dense(20, activation="relu", name="second_dense")(x)
    x = layers.Dropout(dropout, name="dropout_2")(x)
    return layers.Dense(num_outputs, name="logits", dtype="float32")(x)
