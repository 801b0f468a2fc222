"""Mixed precision: where it applies (a GPU), and float16 copies of trained models for explaining.

Keras stores each layer's dtype policy in the saved model, so a float32 model
loaded under a mixed global policy stays float32; `with_policy` rebuilds it
layer by layer under the new policy and copies the weights over.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from cxr.errors import CxrError

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def use_mixed_precision(requested: bool, key: str) -> bool:
    """mixed_float16 pays off on a GPU only; on a CPU it is slower, so the switch is ignored there,
    with a warning."""
    if requested and not gpu_available():
        log.warning("%s ignored: no GPU (float16 on a CPU is slower, not faster)", key)
        return False
    return requested


def set_precision(mixed: bool) -> None:
    """The global policy for models built from now on (training)."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")


def with_policy(model: keras.Model, policy: str) -> keras.Model:
    """A copy of a flat model whose layers compute in `policy` (e.g. mixed_float16); the output
    layer stays float32."""
    if any(isinstance(layer, keras.Model) for layer in model.layers):
        raise CxrError(
            f"model {model.name!r} has a nested model: mixed precision for explaining needs a flat "
            "one"
        )
    last = model.layers[-1].name

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name == last else policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
