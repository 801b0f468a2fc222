"""ImageNet backbones from keras.applications with a logits head.

Built flat with `input_tensor=` so their inner layers stay reachable by name
(a nested backbone hides them from Grad-CAM in Keras 3).
"""

from __future__ import annotations

import keras

from cxr.models.layers import logits_head

CONSTRUCTORS = {
    "resnet50": keras.applications.ResNet50,
    "densenet121": keras.applications.DenseNet121,
    "inception_v3": keras.applications.InceptionV3,
}


def backbone(
    name: str, x: keras.KerasTensor, num_outputs: int, weights: str | None = None
) -> keras.KerasTensor:
    base = CONSTRUCTORS[name](include_top=False, weights=weights, input_tensor=x)
    return logits_head(base.output, num_outputs)
