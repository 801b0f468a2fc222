"""Keras metrics on logits, so checkpoints can be chosen by validation ROC AUC."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cxr")
class SoftmaxAUC(keras.metrics.AUC):
    """ROC AUC of a softmax head from its logits: one-vs-rest per class, averaged.

    For two classes both one-vs-rest curves are the same curve, so this is the
    binary AUC of the positive class.
    """

    def __init__(self, num_classes: int, name: str = "auc", **kwargs: object) -> None:
        kwargs.pop("multi_label", None)
        kwargs.pop("num_labels", None)
        super().__init__(name=name, multi_label=True, num_labels=num_classes, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        return super().update_state(labels, ops.softmax(ops.cast(y_pred, "float32")), sample_weight)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


def make_loss_and_metrics(
    num_classes: int, multi_label: bool
) -> tuple[keras.losses.Loss, list[keras.metrics.Metric]]:
    """Cross-entropy on logits; accuracy and AUC named so the monitor reads val_accuracy /
    val_auc."""
    if multi_label:
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
        metrics = [
            keras.metrics.BinaryAccuracy(
                name="accuracy", threshold=0.0
            ),  # logit 0 = probability 0.5
            keras.metrics.AUC(
                name="auc", multi_label=True, num_labels=num_classes, from_logits=True
            ),
        ]
        return loss, metrics
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy"), SoftmaxAUC(num_classes)]
