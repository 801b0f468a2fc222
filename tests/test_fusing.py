"""Batch norm fused into the layer before it: the same outputs, layer by layer, as the model with
its batch norms, and only where the fusion is exact."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cxr.models.fusing import fusable_pairs, fuse_batch_norm


def random_statistics(model: keras.Model, seed: int = 0) -> None:
    """Moving means and variances, gammas and betas far from their initial 0 and 1."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 3.0, w.shape)
                    if "variance" in w.path
                    else rng.normal(0, 2, w.shape)
                    for w in layer.weights
                ]
            )


def branching_model() -> keras.Model:
    """Every case: fusable convolutions (with and without a bias, gamma or beta), a convolution
    with an activation, one read twice, and a dense layer before a batch norm."""
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, use_bias=False, name="plain_conv")(inputs)
    x = layers.BatchNormalization(name="plain_bn")(x)
    x = layers.ReLU(name="plain")(x)
    x = layers.Conv2D(5, 3, name="biased_conv")(x)
    x = layers.BatchNormalization(center=False, name="biased_bn")(x)
    x = layers.ReLU(name="biased")(x)
    x = layers.Conv2D(5, 1, activation="relu", name="activated_conv")(x)
    x = layers.BatchNormalization(name="activated_bn")(x)
    shared = layers.Conv2D(5, 1, name="shared_conv")(x)
    y = layers.BatchNormalization(scale=False, name="shared_bn")(shared)
    x = layers.Add(name="skip")([y, shared])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(6, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    outputs = layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    random_statistics(model)
    return model


def outputs_by_name(model: keras.Model, names: list[str], images: np.ndarray) -> list[np.ndarray]:
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return [np.asarray(a) for a in probe(images, training=False)]


IMAGES = np.random.default_rng(1).uniform(0, 255, (4, 12, 12, 3)).astype("float32")
NAMED = ["plain_bn", "plain", "biased", "activated_bn", "skip", "dense_bn", "logits"]


def test_only_exact_folds_are_chosen() -> None:
    model = branching_model()
    assert fusable_pairs(model) == {
        "plain_bn": "plain_conv",
        "biased_bn": "biased_conv",
        "dense_bn": "dense",
    }
    # a layer whose own output is read stays as it is, and so does its batch norm
    assert "biased_bn" not in fusable_pairs(model, keep=["biased_conv"])
    assert fusable_pairs(model, keep=[None]) == fusable_pairs(model)  # an input method: no layer


def test_fused_copy_computes_every_named_output_as_before() -> None:
    model = branching_model()
    fused = fuse_batch_norm(model)
    kinds = {layer.name: type(layer).__name__ for layer in fused.layers}
    assert [kinds[n] for n in ("plain_bn", "biased_bn", "dense_bn")] == ["Identity"] * 3
    assert kinds["activated_bn"] == kinds["shared_bn"] == "BatchNormalization"
    keras.models.clone_model(fused)  # as the guided and float16 copies do: every layer's config
    for before, after in zip(
        outputs_by_name(model, NAMED, IMAGES), outputs_by_name(fused, NAMED, IMAGES), strict=True
    ):
        scale = np.abs(before).max()
        assert scale > 1  # the statistics are not the identity
        np.testing.assert_allclose(after, before, atol=1e-5 * scale)


def test_the_fold_by_hand() -> None:
    """Dense 1 -> 1 with kernel 2 and bias 1, then batch norm with mean 3, variance 3, epsilon 1
    (s = gamma / 2 = 2), beta 5: kernel 2 * 2 = 4, bias (1 - 3) * 2 + 5 = 1."""
    inputs = keras.Input((1,))
    x = keras.layers.Dense(1, name="dense")(inputs)
    outputs = keras.layers.BatchNormalization(epsilon=1.0, name="bn")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("dense").set_weights([np.array([[2.0]]), np.array([1.0])])
    gamma, beta, mean, variance = ([value] for value in (4.0, 5.0, 3.0, 3.0))
    model.get_layer("bn").set_weights([np.array(v) for v in (gamma, beta, mean, variance)])
    fused = fuse_batch_norm(model)
    kernel, bias = fused.get_layer("dense").get_weights()
    assert kernel.tolist() == [[4.0]] and bias.tolist() == [1.0]
    for each in (model, fused):  # 10 -> 21 -> (21 - 3) * 2 + 5
        assert float(each(np.array([[10.0]]))[0, 0]) == pytest.approx(41.0)


def test_nothing_to_fold_returns_the_model_itself() -> None:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    assert fuse_batch_norm(plain) is plain
    nested = keras.Sequential([keras.Input((12, 12, 3)), branching_model()])
    assert fuse_batch_norm(nested) is nested
    layers = keras.layers
    sequential = keras.Sequential(
        [keras.Input((8, 8, 1)), layers.Conv2D(2, 3), layers.BatchNormalization(), layers.ReLU()]
    )
    assert fuse_batch_norm(sequential) is sequential
