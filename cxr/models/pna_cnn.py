"""The stride-conv pneumonia CNN of seed 000, and a tiny sibling for tests.

A 3x3 stride-1 conv with 16 filters, then five stages of [3x3 stride 2, 3x3
stride 1] with 32, 48, 64, 80, 96 filters; batch norm and ReLU after every
conv; global average pooling; dense logits. The seed's Conv3D with a 1x3x3
kernel on one slice is this same 2-D computation. Five stride-2 convs: a
512 px input ends in a 16 x 16 map.
"""

from __future__ import annotations

import keras

from cxr.models.layers import conv_bn_relu, logits_head

DEFAULT_WIDTHS = (16, 32, 48, 64, 80, 96)
FEATURE_LAYER = "features"


def pna_cnn(
    x: keras.KerasTensor, num_outputs: int, widths: list[int] | None = None, momentum: float = 0.99
) -> keras.KerasTensor:
    """widths[0] is the stem; each further width is one [stride 2, stride 1] stage."""
    widths = list(widths or DEFAULT_WIDTHS)
    if len(widths) < 2:
        raise ValueError("pna_cnn needs a stem width and at least one stage width")
    x = conv_bn_relu(x, widths[0], 1, "stem", momentum)
    for stage, filters in enumerate(widths[1:], start=1):
        x = conv_bn_relu(x, filters, 2, f"stage{stage}_down", momentum)
        x = conv_bn_relu(
            x, filters, 1, FEATURE_LAYER if stage == len(widths) - 1 else f"stage{stage}", momentum
        )
    return logits_head(x, num_outputs)


def tiny_cnn(
    x: keras.KerasTensor, num_outputs: int, widths: list[int] | None = None, momentum: float = 0.9
) -> keras.KerasTensor:
    """Two small stride-2 stages: for tests, through the same code paths as the real models."""
    widths = list(widths or (4, 8))
    x = conv_bn_relu(x, widths[0], 2, "stage1", momentum)
    x = conv_bn_relu(x, widths[1], 2, FEATURE_LAYER, momentum)
    return logits_head(x, num_outputs)
