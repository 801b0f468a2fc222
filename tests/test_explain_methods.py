"""The explanation engine against independent computations: per-image tapes, closed forms, hand-made
weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cxr.catalogs.methods import LAYER_METHODS, METHOD_NAMES, METHOD_SPECS, METHODS_BY_NAME
from cxr.errors import CxrError
from cxr.explain.methods import explain_batch
from cxr.explain.probe import find_target_layer, make_probe

RNG = np.random.default_rng(0)


def small_cnn(outputs: int = 3) -> keras.Model:
    """Conv + batch norm (so inference mode matters) + ReLU twice, pooling, dense; the same weights
    in every run."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(outputs, name="logits")(x))
    # non-trivial inference statistics
    for layer in (
        model.get_layer("bn1"),
        model.get_layer("bn2"),
    ):
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma * 1.5, beta + 0.2, mean + 0.1, var * 2.0])
    return model


def reference_gradcam(
    model: keras.Model, layer: str, image: np.ndarray, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The textbook algorithm for ONE image with its own GradientTape (raw map, normalised upsampled
    map)."""
    activations, grads = reference_grads(model, layer, image, class_index)
    weights = grads.mean(axis=(0, 1))  # this image's gradients only
    raw = np.maximum((activations * weights).sum(axis=-1), 0)
    up = tf.image.resize(
        raw[None, ..., None].astype("float32"), image.shape[:2], method="bilinear"
    )[0, ..., 0].numpy()
    up = np.maximum(up, 0)
    return raw, up / up.max() if up.max() > 0 else up


@pytest.fixture(scope="module")
def model_and_data():
    model = small_cnn()
    images = RNG.uniform(0, 1, (32, 32, 32, 1)).astype("float32")
    targets = RNG.integers(0, 3, 32)
    references = [
        reference_gradcam(model, "features", images[i], int(targets[i])) for i in range(32)
    ]
    return model, images, targets, references


@pytest.mark.parametrize("batch", [1, 7, 32])
def test_batched_gradcam_equals_per_image(model_and_data, batch: int) -> None:
    model, images, targets, references = model_and_data
    probe = make_probe(model, "features")
    for start in range(0, 32, batch):
        result = explain_batch(probe, images[start : start + batch], targets[start : start + batch])
        for i, j in enumerate(range(start, min(start + batch, 32))):
            # float32 round-off differs between batch sizes (other kernels): up to ~1.5e-5 of a map
            # value
            np.testing.assert_allclose(result.raw_maps[i], references[j][0], atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(result.maps[i], references[j][1], atol=1e-5, rtol=1e-4)


def test_shuffled_batch_gives_the_same_maps(model_and_data) -> None:
    model, images, targets, references = model_and_data
    order = RNG.permutation(32)
    result = explain_batch(make_probe(model, "features"), images[order], targets[order])
    for i, j in enumerate(order):
        np.testing.assert_allclose(result.maps[i], references[j][1], atol=1e-5, rtol=1e-4)


def test_batch_mean_bug_would_be_caught(model_and_data) -> None:
    """Averaging gradients over the batch too (seed 000) gives different maps: the per-image test
    above can fail."""
    model, images, targets, references = model_and_data
    both = keras.Model(model.input, [model.get_layer("features").output, model.output])
    with tf.GradientTape() as tape:
        activations, logits = both(images[:7], training=False)
        target = tf.gather(logits, targets[:7], axis=1, batch_dims=1)
    grads = tape.gradient(target, activations)
    buggy = tf.nn.relu(
        tf.reduce_sum(tf.reduce_mean(grads, axis=(0, 1, 2)) * activations, axis=-1)
    ).numpy()
    assert max(np.abs(buggy[i] - references[i][0]).max() for i in range(7)) > 1e-3


def identity_toy(weights: np.ndarray, size: int = 8) -> keras.Model:
    """input -> 1x1 conv identity -> global average pooling -> dense W without bias."""
    channels = weights.shape[0]
    inputs = keras.Input((size, size, channels))
    conv = keras.layers.Conv2D(channels, 1, use_bias=False, name="identity")
    pool = keras.layers.GlobalAveragePooling2D(name="pool")
    dense = keras.layers.Dense(weights.shape[1], use_bias=False, name="logits")
    model = keras.Model(inputs, dense(pool(conv(inputs))))
    conv.set_weights([np.eye(channels).reshape(1, 1, channels, channels)])
    dense.set_weights([weights])
    return model


def test_closed_form_toy_model() -> None:
    w = RNG.normal(size=(4, 3)).astype("float32")
    x = RNG.uniform(-1, 1, (5, 8, 8, 4)).astype("float32")
    targets = np.array([0, 1, 2, 1, 0])
    result = explain_batch(make_probe(identity_toy(w), "identity"), x, targets)
    for i, c in enumerate(targets):
        expected = np.maximum((x[i] * w[:, c]).sum(-1), 0) / 64  # alpha_k = W[k, c] / (h w)
        np.testing.assert_allclose(result.raw_maps[i], expected, atol=1e-6)
        if expected.max() > 0:
            np.testing.assert_allclose(result.maps[i], expected / expected.max(), atol=1e-5)


def test_hand_computed_channel_weights_on_two_convs() -> None:
    """Target layer conv_a, then a 1x1 conv M, pooling and dense W: the weights are (M W)[:, c] / (h
    w)."""
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", name="conv_a")(inputs)
    b = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_b")(a)
    model = keras.Model(
        inputs,
        keras.layers.Dense(2, use_bias=False, name="logits")(
            keras.layers.GlobalAveragePooling2D()(b)
        ),
    )
    m, w = RNG.normal(size=(3, 4)).astype("float32"), RNG.normal(size=(4, 2)).astype("float32")
    model.get_layer("conv_b").set_weights([m.reshape(1, 1, 3, 4)])
    model.get_layer("logits").set_weights([w])
    x = RNG.uniform(0, 1, (3, 6, 6, 2)).astype("float32")
    activations = keras.Model(inputs, a).predict(x, verbose=0)
    result = explain_batch(make_probe(model, "conv_a"), x, np.array([0, 1, 1]))
    for i, c in enumerate([0, 1, 1]):
        alpha = (m @ w)[:, c] / 36
        np.testing.assert_allclose(
            result.raw_maps[i], np.maximum(activations[i] @ alpha, 0), atol=1e-5
        )


def test_zero_map_stays_zero_and_is_flagged() -> None:
    # every channel argues against both classes
    w = -np.abs(RNG.normal(size=(3, 2))).astype("float32")
    x = RNG.uniform(0.1, 1, (2, 8, 8, 3)).astype("float32")
    result = explain_batch(make_probe(identity_toy(w), "identity"), x, np.array([0, 1]))
    assert result.empty.tolist() == [True, True]
    assert (
        np.isfinite(result.maps).all() and (result.maps == 0).all() and (result.raw_peak == 0).all()
    )


def test_explains_logits_even_when_softmax_saturates() -> None:
    w = np.array([[500.0, -500.0], [0.0, 0.0]], dtype="float32")
    x = np.ones((1, 8, 8, 2), dtype="float32")
    x[0, :4, :, 0] = 2.0
    model = identity_toy(w)
    with tf.GradientTape() as tape:  # why logits: the softmax gradient has vanished
        xt = tf.constant(x)
        tape.watch(xt)
        prob = tf.nn.softmax(model(xt))[0, 0]
    assert float(tf.reduce_max(tf.abs(tape.gradient(prob, xt)))) < 1e-20
    result = explain_batch(make_probe(model, "identity"), x, np.array([0]))
    assert not result.empty[0]
    np.testing.assert_allclose(
        result.maps[0], np.where(np.arange(8)[:, None] < 4, 1.0, 0.5) * np.ones((8, 8)), atol=1e-5
    )


def test_single_logit_head_explains_the_negative_class_with_minus_logit() -> None:
    w = np.array([[1.0], [-1.0]], dtype="float32")
    x = RNG.uniform(0, 1, (2, 8, 8, 2)).astype("float32")
    result = explain_batch(make_probe(identity_toy(w), "identity"), x, np.array([1, 0]))
    score = x[..., 0] - x[..., 1]
    np.testing.assert_allclose(result.raw_maps[0], np.maximum(score[0], 0) / 64, atol=1e-6)
    np.testing.assert_allclose(result.raw_maps[1], np.maximum(-score[1], 0) / 64, atol=1e-6)


def test_target_count_must_match_the_batch() -> None:
    probe = make_probe(identity_toy(np.ones((2, 2), "float32")), "identity")
    with pytest.raises(CxrError, match=r"targets of shape \(3,\) for 2 images"):
        explain_batch(probe, np.zeros((2, 8, 8, 2), "float32"), np.array([0, 1, 1]))


def test_nested_backbone_matches_the_flat_model() -> None:
    """Sequential([backbone, pooling, dense]): the shape that gives 'Graph disconnected'
    elsewhere."""
    keras.utils.set_random_seed(2)
    backbone_in = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="b1")(
        backbone_in
    )
    h = keras.layers.Conv2D(7, 3, strides=2, padding="same", activation="relu", name="b_last")(h)
    backbone = keras.Model(backbone_in, h, name="backbone")
    pool, dense = (
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(3, name="logits"),
    )
    nested = keras.Sequential([keras.Input((32, 32, 1)), backbone, pool, dense])
    flat_in = keras.Input((32, 32, 1))
    h = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="b1")(flat_in)
    h = keras.layers.Conv2D(7, 3, strides=2, padding="same", activation="relu", name="b_last")(h)
    flat = keras.Model(
        flat_in,
        keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="pool")(h)),
    )
    # same layers in the same order: the same function, built flat
    flat.set_weights(nested.get_weights())
    images = RNG.uniform(0, 1, (4, 32, 32, 1)).astype("float32")
    targets = np.array([0, 1, 2, 0])
    assert find_target_layer(nested) == "backbone"
    for layer in ("b_last", None, "b1"):
        result = explain_batch(make_probe(nested, layer), images, targets)
        for i in range(4):
            _, up = reference_gradcam(flat, layer or "b_last", images[i], int(targets[i]))
            np.testing.assert_allclose(result.maps[i], up, atol=1e-5, rtol=1e-4)


def test_a_skip_past_the_layer_is_differentiated_through_the_whole_model() -> None:
    """Logits that read an earlier layer too cannot be cut at the target layer: the CAM methods
    then take the gradient through the whole model, and still match a per-image tape; a plain
    model is cut, so that the tape records its head only."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 1))
    early = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="e")(
        inputs
    )
    late = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="late")(early)
    pooled = [keras.layers.GlobalAveragePooling2D()(t) for t in (early, late)]
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Concatenate()(pooled)))
    probe = make_probe(model, "late")
    assert probe.split is None and make_probe(small_cnn(), "features").split is not None
    images = RNG.uniform(0, 1, (4, 32, 32, 1)).astype("float32")
    targets = np.array([0, 1, 2, 1])
    result = explain_batch(probe, images, targets)
    for i in range(4):
        raw, up = reference_gradcam(model, "late", images[i], int(targets[i]))
        np.testing.assert_allclose(result.raw_maps[i], raw, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(result.maps[i], up, atol=1e-5, rtol=1e-4)


def test_target_layer_is_found_and_bad_names_are_clear() -> None:
    model = small_cnn()
    assert find_target_layer(model) == "features"
    with pytest.raises(CxrError, match="layer 'featurez' not found"):
        make_probe(model, "featurez")
    with pytest.raises(CxrError, match="Grad-CAM needs a spatial"):
        make_probe(model, "pool")


def reference_grads(
    model: keras.Model, layer: str, image: np.ndarray, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image's activations and gradients at `layer`, from its own tape."""
    both = keras.Model(model.input, [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        activations, logits = both(image[None], training=False)
        target = logits[0, class_index]
    return activations[0].numpy().astype("float64"), tape.gradient(target, activations)[
        0
    ].numpy().astype("float64")


def test_gradcam_plus_plus_and_hirescam_match_their_formulas(model_and_data) -> None:
    model, images, targets, _ = model_and_data
    probe = make_probe(model, "features")
    plus = explain_batch(probe, images[:5], targets[:5], method="gradcam++")
    hires = explain_batch(probe, images[:5], targets[:5], method="hirescam")
    for i in range(5):
        a, g = reference_grads(model, "features", images[i], int(targets[i]))
        denominator = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
        alpha = np.where(denominator != 0, g**2 / np.where(denominator != 0, denominator, 1), 0)
        weights = (alpha * np.maximum(g, 0)).sum(axis=(0, 1))
        np.testing.assert_allclose(
            plus.raw_maps[i], np.maximum((a * weights).sum(-1), 0), atol=1e-6, rtol=1e-4
        )
        np.testing.assert_allclose(
            hires.raw_maps[i], np.maximum((a * g).sum(-1), 0), atol=1e-6, rtol=1e-4
        )


def test_saliency_and_input_x_gradient_match_per_image_input_gradients(model_and_data) -> None:
    model, images, targets, _ = model_and_data
    probe = make_probe(model, "features")
    sal = explain_batch(probe, images[:4], targets[:4], method="saliency")
    ixg = explain_batch(probe, images[:4], targets[:4], method="input_x_gradient")
    for i in range(4):
        x = tf.constant(images[i : i + 1])
        with tf.GradientTape() as tape:
            tape.watch(x)
            target = model(x, training=False)[0, int(targets[i])]
        grad = tape.gradient(target, x)[0, ..., 0].numpy()
        np.testing.assert_allclose(sal.raw_maps[i], np.abs(grad), atol=1e-7, rtol=1e-4)
        np.testing.assert_allclose(
            ixg.raw_maps[i], np.abs(grad * images[i, ..., 0]), atol=1e-7, rtol=1e-4
        )


def test_integrated_gradients_are_complete() -> None:
    """Attributions sum to target(image) - target(black) (Sundararajan et al.'s completeness), up to
    the path sum's error."""
    from cxr.explain.methods import integrated_gradient_attributions

    model = small_cnn()
    probe = make_probe(model, "features")
    images = RNG.uniform(0, 1, (3, 32, 32, 1)).astype("float32")
    targets = tf.constant([0, 1, 2])
    attributions, logits = integrated_gradient_attributions(
        probe, tf.constant(images), targets, steps=64
    )
    black = model(np.zeros_like(images), training=False).numpy()
    for i, c in enumerate([0, 1, 2]):
        gap = float(logits[i, c] - black[i, c])
        assert float(tf.reduce_sum(attributions[i])) == pytest.approx(gap, rel=0.02, abs=1e-3)


@pytest.mark.parametrize("multi_label", [False, True])
def test_scorecam_matches_a_per_channel_loop(multi_label: bool) -> None:
    """Each channel weighted by the target's probability: the softmax's, or for a multi-label model
    the finding's own sigmoid."""
    model = small_cnn()
    images = RNG.uniform(0, 1, (3, 32, 32, 1)).astype("float32")
    targets = np.array([2, 0, 1])
    probe = make_probe(model, "features", multi_label=multi_label)
    result = explain_batch(probe, images, targets, method="scorecam")
    features = keras.Model(model.input, model.get_layer("features").output)
    for i, c in enumerate(targets):
        activations = features.predict(images[i : i + 1], verbose=0)[0]
        weights = []
        for k in range(activations.shape[-1]):
            mask = tf.image.resize(activations[None, ..., k : k + 1], (32, 32), method="bilinear")[
                0, ..., 0
            ].numpy()
            span = mask.max() - mask.min()
            mask = (mask - mask.min()) / span if span > 0 else np.zeros_like(mask)
            logits = model.predict((images[i, ..., 0] * mask)[None, ..., None], verbose=0)[0]
            softmax = np.exp(logits[c]) / np.exp(logits).sum()
            weights.append(1 / (1 + np.exp(-logits[c])) if multi_label else softmax)
        expected = np.maximum((activations * np.array(weights)).sum(-1), 0)
        np.testing.assert_allclose(result.raw_maps[i], expected, atol=1e-5, rtol=1e-4)


def test_mixed_precision_model_is_explained_in_float32() -> None:
    reference = small_cnn()
    images = RNG.uniform(0, 1, (4, 32, 32, 1)).astype("float32")
    expected = explain_batch(make_probe(reference, "features"), images, np.array([0, 1, 2, 0]))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = small_cnn()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    half.set_weights(reference.get_weights())
    assert half.get_layer("features").compute_dtype == "float16"
    result = explain_batch(make_probe(half, "features"), images, np.array([0, 1, 2, 0]))
    assert (
        result.maps.dtype == np.float32
        and result.logits.dtype == np.float32
        and np.isfinite(result.maps).all()
    )
    np.testing.assert_allclose(result.maps, expected.maps, atol=0.05)


def test_guided_backprop_by_hand() -> None:
    """x -> 1x1 conv K -> ReLU -> pooling -> dense W: the guided gradient at x is K @ [(W[:, c] > 0)
    (pre > 0) W[:, c] / hw]."""
    inputs = keras.Input((8, 8, 2))
    pre = keras.layers.Conv2D(3, 1, use_bias=False, name="pre")(inputs)
    act = keras.layers.ReLU(name="act")(pre)
    model = keras.Model(
        inputs,
        keras.layers.Dense(2, use_bias=False, name="logits")(
            keras.layers.GlobalAveragePooling2D()(act)
        ),
    )
    k, w = RNG.normal(size=(2, 3)).astype("float32"), RNG.normal(size=(3, 2)).astype("float32")
    model.get_layer("pre").set_weights([k.reshape(1, 1, 2, 3)])
    model.get_layer("logits").set_weights([w])
    x = RNG.normal(size=(2, 8, 8, 2)).astype("float32")
    result = explain_batch(make_probe(model, "act"), x, np.array([0, 1]), method="guided_backprop")
    for i, c in enumerate([0, 1]):
        # (3,): what reaches each ReLU output, kept if positive
        upstream = np.where(w[:, c] > 0, w[:, c], 0) / 64
        # (8, 8, 3): and only where the ReLU's input was positive
        passed = (x[i] @ k > 0) * upstream
        # back through K to the input; positive part, max over channels
        expected = np.maximum(passed @ k.T, 0).max(axis=-1)
        np.testing.assert_allclose(result.raw_maps[i], expected, atol=1e-6)
    plain = explain_batch(make_probe(model, "act"), x, np.array([0, 1]), method="saliency")
    assert not np.allclose(plain.raw_maps, result.raw_maps)  # the guided rule changed something
    cam = explain_batch(make_probe(model, "act"), x, np.array([0, 1]), method="gradcam")
    both = explain_batch(make_probe(model, "act"), x, np.array([0, 1]), method="guided_gradcam")
    # same 8 x 8 size: no resize
    np.testing.assert_allclose(both.raw_maps, result.raw_maps * cam.raw_maps, atol=1e-6)


def test_padded_last_batch_reuses_one_trace_and_matches_per_image(model_and_data) -> None:
    """pad_to: a fold of 32 in batches of 12 (12, 12, 8) traces once; the padding never reaches the
    result."""
    model, images, targets, references = model_and_data
    probe = make_probe(model, "features")
    for start in range(0, 32, 12):
        result = explain_batch(
            probe, images[start : start + 12], targets[start : start + 12], pad_to=12
        )
        assert result.maps.shape[0] == min(12, 32 - start)
        for i, j in enumerate(range(start, min(start + 12, 32))):
            np.testing.assert_allclose(result.raw_maps[i], references[j][0], atol=1e-5, rtol=1e-4)
            np.testing.assert_allclose(result.maps[i], references[j][1], atol=1e-5, rtol=1e-4)
    assert probe.compiled["gradcam"].experimental_get_tracing_count() == 1


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "saliency"])
def test_xla_matches_the_plain_path(model_and_data, method: str) -> None:
    model, images, targets, references = model_and_data
    plain = explain_batch(make_probe(model, "features"), images[:8], targets[:8], method)
    probe = make_probe(model, "features", jit_compile=True)
    compiled = explain_batch(probe, images[:8], targets[:8], method)
    np.testing.assert_allclose(compiled.raw_maps, plain.raw_maps, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(compiled.maps, plain.maps, atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(compiled.class_index, plain.class_index)
    if method == "gradcam":  # and against the independent per-image tape
        for i in range(8):
            np.testing.assert_allclose(compiled.maps[i], references[i][1], atol=1e-5, rtol=1e-4)


def test_float16_copy_of_a_trained_model_explains_close_to_float32(model_and_data) -> None:
    """explain.mixed_precision: with_policy rebuilds a float32 model in mixed_float16 (logits layer
    kept float32)."""
    from cxr.models.precision import with_policy

    model, images, targets, references = model_and_data
    half = with_policy(model, "mixed_float16")
    assert (
        half.get_layer("features").compute_dtype == "float16"
        and half.get_layer("logits").compute_dtype == "float32"
    )
    # float32 master weights, as Keras keeps them
    assert half.get_layer("c1").kernel.dtype == "float32"
    result = explain_batch(make_probe(half, "features"), images[:8], targets[:8])
    assert result.maps.dtype == np.float32 and np.isfinite(result.maps).all()
    for i in range(8):
        np.testing.assert_allclose(result.maps[i], references[i][1], atol=0.02)
    assert model.get_layer("features").compute_dtype == "float32"  # the original is untouched


def test_mixed_precision_is_ignored_on_a_cpu_with_a_warning(caplog, monkeypatch) -> None:
    from cxr.models import precision
    from cxr.models.precision import use_mixed_precision

    # as on CI, whatever this machine has
    monkeypatch.setattr(precision, "gpu_available", lambda: False)
    with caplog.at_level("WARNING"):
        assert use_mixed_precision(True, "explain.mixed_precision") is False
    assert "explain.mixed_precision ignored: no GPU" in caplog.text
    assert use_mixed_precision(False, "explain.mixed_precision") is False


def test_a_coarse_target_layer_is_named_with_finer_ones() -> None:
    from cxr.config import load_config
    from cxr.explain.probe import coarse_map_note
    from cxr.models.build import build_model

    small = build_model(load_config(None, ["model.name=pna_cnn", "data.image_size=224"]), 2)
    note = coarse_map_note(small, "features")
    assert note is not None and note.startswith("layer 'features' gives 7x7 maps")
    assert "--layer stage4_conv (14x14), stage4_bn (14x14), stage4 (14x14)" in note
    large = build_model(load_config(None, ["model.name=pna_cnn", "data.image_size=512"]), 2)
    assert coarse_map_note(large, "features") is None  # 16 x 16


def test_layercam_xgradcam_and_eigencam_match_per_image_references(model_and_data) -> None:
    """Each image's own tape (and, for EigenCAM, numpy's SVD) against the batched engine."""
    model, images, targets, _ = model_and_data
    probe = make_probe(model, "features")
    found = {
        m: explain_batch(probe, images[:6], targets[:6], method=m).raw_maps
        for m in ("layercam", "xgradcam", "eigencam")
    }
    for i in range(6):
        a, g = reference_grads(model, "features", images[i], int(targets[i]))
        layercam = np.maximum((np.maximum(g, 0) * a).sum(-1), 0)
        total = a.sum(axis=(0, 1))
        share = np.divide(a, total, out=np.zeros_like(a), where=total != 0)
        xgradcam = np.maximum((a * (share * g).sum(axis=(0, 1))).sum(-1), 0)
        flat = a.reshape(-1, a.shape[-1])
        centred = flat - flat.mean(axis=0)
        projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
        projection *= -1 if projection @ centred.sum(axis=1) < 0 else 1
        eigencam = np.maximum(projection, 0).reshape(a.shape[:2])
        np.testing.assert_allclose(found["layercam"][i], layercam, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(found["xgradcam"][i], xgradcam, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(found["eigencam"][i], eigencam, atol=1e-4, rtol=1e-3)
    # EigenCAM knows no class: every target gives the same map
    other = explain_batch(probe, images[:6], (targets[:6] + 1) % 3, method="eigencam").raw_maps
    np.testing.assert_allclose(other, found["eigencam"], atol=1e-6)


def test_every_method_in_the_registry_is_complete() -> None:
    """Each entry: an engine function that cites the entry's paper in its docstring, and a name
    docs/explain.md gives. (The config's and the engine's lists are made from the registry, so they
    need no check of their own.)"""
    from cxr.catalogs.methods import METHOD_SPECS
    from cxr.explain.methods import METHODS

    readme = (Path(__file__).resolve().parents[1] / "docs" / "explain.md").read_text()
    for spec in METHOD_SPECS:
        first_author = spec.paper.split()[0]
        assert first_author in (METHODS[spec.name].__doc__ or ""), spec.name
        assert f"`{spec.name}`" in readme, spec.name
    from cxr.catalogs.methods import methods_markdown

    assert methods_markdown() in readme  # the page's table is the registry's


def linear_toy(size: int = 16) -> tuple[keras.Model, np.ndarray]:
    """logits = W x, no bias: occluding a square drops the target logit by that square's W x."""
    rng = np.random.default_rng(8)
    weights = rng.normal(size=(size * size, 2)).astype("float32")
    inputs = keras.Input((size, size, 1))
    spatial = keras.layers.Identity(name="features")(inputs)  # a probe needs a 4-D layer
    flat = keras.layers.Flatten()(spatial)
    model = keras.Model(inputs, keras.layers.Dense(2, use_bias=False, name="logits")(flat))
    model.get_layer("logits").set_weights([weights])
    return model, weights


def test_occlusion_on_a_linear_toy_model_by_hand() -> None:
    """16 px: a 2 x 2 square (1/8 of the side) slid by 1 px (1/16); each pixel's value is the mean
    drop of the squares covering it, ReLU'd."""
    model, weights = linear_toy()
    image = np.random.default_rng(9).uniform(0, 1, (1, 16, 16, 1)).astype("float32")
    found = explain_batch(make_probe(model, "features"), image, np.array([1]), "occlusion")
    contribution = (weights[:, 1] * image.reshape(-1)).reshape(16, 16)
    total, covered = np.zeros((16, 16)), np.zeros((16, 16))
    for top in range(15):
        for left in range(15):
            total[top : top + 2, left : left + 2] += contribution[
                top : top + 2, left : left + 2
            ].sum()
            covered[top : top + 2, left : left + 2] += 1
    np.testing.assert_allclose(found.raw_maps[0], np.maximum(total / covered, 0), atol=1e-5)


def test_rise_finds_the_region_a_toy_model_reads() -> None:
    """The class-1 logit is 8 x the mean of the top-left 4 x 4 pixels - 4: RISE must put its
    weight there (its 16 highest pixels), and equal its formula computed mask by mask."""
    from cxr.explain.methods import RISE_KEEP, rise_masks

    inputs = keras.Input((16, 16, 1))
    region = keras.layers.Cropping2D(((0, 12), (0, 12)), name="features")(inputs)
    mean = keras.layers.GlobalAveragePooling2D()(region)
    logits = keras.layers.Concatenate(name="logits")([0.0 * mean, 8.0 * mean - 4.0])
    model = keras.Model(inputs, logits)
    image = np.ones((1, 16, 16, 1), "float32")
    found = explain_batch(make_probe(model, "features"), image, np.array([1]), "rise").raw_maps[0]
    inside = np.zeros((16, 16), bool)
    inside[:4, :4] = True
    top = np.argsort(found.ravel())[-16:]
    assert inside.ravel()[top].mean() >= 0.75, found.round(2)
    masks = rise_masks(16, 16)
    out = model.predict(masks[..., None] * image, verbose=0)
    probability = np.exp(out[:, 1]) / np.exp(out).sum(axis=1)
    expected = (probability[:, None, None] * masks).sum(axis=0) / (len(masks) * RISE_KEEP)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)
    # read as two independent findings: class 1's own sigmoid weighs each mask
    probe = make_probe(model, "features", multi_label=True)
    found = explain_batch(probe, image, np.array([1]), "rise").raw_maps[0]
    sigmoid = 1 / (1 + np.exp(-out[:, 1]))
    expected = (sigmoid[:, None, None] * masks).sum(axis=0) / (len(masks) * RISE_KEEP)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-6)


def test_occlusion_and_rise_take_their_settings_from_the_config() -> None:
    """explain.occlusion_* and explain.rise_masks reach the traced functions through the probe."""
    from cxr.catalogs.methods import method_parameters
    from cxr.config import load_config
    from cxr.explain.methods import occlusion_patches

    cfg = load_config(
        None,
        ["explain.occlusion_patch=0.25", "explain.occlusion_stride=0.25", "explain.rise_masks=16"],
    )
    parameters = method_parameters(cfg.explain)
    assert parameters == {"occlusion": {"patch": 0.25, "stride": 0.25}, "rise": {"masks": 16}}
    model, weights = linear_toy()
    image = np.random.default_rng(10).uniform(0, 1, (1, 16, 16, 1)).astype("float32")
    probe = make_probe(model, "features", parameters=parameters)
    found = explain_batch(probe, image, np.array([1]), "occlusion").raw_maps[0]
    # 4 x 4 squares in steps of 4: a tiling, each pixel covered once
    assert len(occlusion_patches(16, 16, 0.25, 0.25)) == 16
    contribution = (weights[:, 1] * image.reshape(-1)).reshape(16, 16)
    tiles = contribution.reshape(4, 4, 4, 4).sum(axis=(1, 3))
    np.testing.assert_allclose(found, np.maximum(np.kron(tiles, np.ones((4, 4))), 0), atol=1e-5)
    from cxr.explain.methods import RISE_KEEP, rise_masks

    rise_map = explain_batch(probe, image, np.array([1]), "rise").raw_maps[0]
    masks = rise_masks(16, 16, 16)  # sixteen masks, not the default 512
    out = model.predict(masks[..., None] * image, verbose=0)
    probability = np.exp(out[:, 1]) / np.exp(out).sum(axis=1)
    expected = (probability[:, None, None] * masks).sum(axis=0) / (16 * RISE_KEEP)
    np.testing.assert_allclose(rise_map, expected, rtol=1e-4, atol=1e-6)


def test_ablationcam_matches_a_per_image_per_channel_loop(model_and_data) -> None:
    """Each channel of each image zeroed on its own, the head run on it: (y - y_k) / y."""
    model, images, targets, _ = model_and_data
    found = explain_batch(make_probe(model, "features"), images[:3], targets[:3], "ablationcam")
    features = keras.Model(model.input, model.get_layer("features").output)
    head = keras.Model(model.get_layer("features").output, model.output)
    for i in range(3):
        a = features(images[i : i + 1], training=False).numpy()[0].astype("float64")
        y = head(a[None].astype("float32"), training=False).numpy()[0, targets[i]]
        weights = []
        for k in range(a.shape[-1]):
            ablated = a.copy()
            ablated[..., k] = 0
            y_k = head(ablated[None].astype("float32"), training=False).numpy()[0, targets[i]]
            weights.append((y - y_k) / y if y != 0 else 0.0)
        expected = np.maximum((a * np.array(weights)).sum(-1), 0)
        np.testing.assert_allclose(found.raw_maps[i], expected, rtol=1e-3, atol=1e-5)


def test_ablationcam_needs_the_logits_to_follow_from_the_layer() -> None:
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(2, 3, padding="same", name="b")(a)
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(a), keras.layers.Flatten()(b)])
    model = keras.Model(inputs, keras.layers.Dense(2)(merged))
    images = np.zeros((1, 8, 8, 1), "float32")
    with pytest.raises(CxrError, match="depend on more than layer 'b'") as raised:
        explain_batch(make_probe(model, "b"), images, np.array([0]), "ablationcam")
    # raised while TensorFlow traced the method: the message is ours alone, one line
    assert str(raised.value).startswith("the logits of") and "\n" not in str(raised.value)


def test_perturbations_too_many_to_hold_are_a_clear_error() -> None:
    from cxr.explain.methods import occlusion_patches, rise_masks

    with pytest.raises(CxrError, match=r"occlusion squares \(explain.occlusion_patch 0.001"):
        occlusion_patches(1024, 1024, 0.001, 0.001)
    with pytest.raises(CxrError, match=r"RISE masks \(explain.rise_masks 100000\): 100000 of"):
        rise_masks(256, 256, 100_000)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_several_classes_per_image_equal_one_run_per_class(method: str) -> None:
    """(B, K) targets give, image-major, the maps of K separate single-target runs; -2 is each
    image's second most probable class."""
    model = small_cnn()
    probe = make_probe(
        model, "features" if method in LAYER_METHODS else None, parameters={"rise": {"masks": 64}}
    )
    images = RNG.uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    targets = np.array([[-1, -2], [0, 2], [2, -1]])
    several = explain_batch(probe, images, targets, method, pad_to=4)
    assert several.maps.shape == (6, 32, 32) and several.logits.shape == (6, 3)
    ranked = np.argsort(-model.predict(images, verbose=0), axis=1, kind="stable")
    expected = np.array([[ranked[0, 0], ranked[0, 1]], [0, 2], [2, ranked[2, 0]]])
    np.testing.assert_array_equal(several.class_index, expected.ravel())
    for k in range(2):
        one = explain_batch(probe, images, expected[:, k], method, pad_to=4)
        np.testing.assert_allclose(several.maps[k::2], one.maps, atol=1e-5)
        np.testing.assert_allclose(several.raw_peak[k::2], one.raw_peak, rtol=1e-5, atol=1e-9)


def test_second_class_gradcam_equals_a_per_image_tape() -> None:
    model = small_cnn()
    images = RNG.uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    result = explain_batch(make_probe(model, "features"), images, np.array([[-2], [-2]]))
    second = np.argsort(-model.predict(images, verbose=0), axis=1, kind="stable")[:, 1]
    for i in range(2):
        raw, up = reference_gradcam(model, "features", images[i], int(second[i]))
        np.testing.assert_allclose(result.raw_maps[i], raw, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(result.maps[i], up, atol=1e-5)


class ImageCounter(keras.layers.Layer):
    """Adds the batch size of every call to a variable: the images that went through the model."""

    def build(self, input_shape) -> None:
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

    def call(self, x):
        self.seen.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


@pytest.mark.parametrize("method", [spec.name for spec in METHOD_SPECS if spec.shared_targets])
def test_shared_targets_take_one_forward_pass(method: str) -> None:
    """Three classes per image: the model sees each image once (one backward pass per class), not
    three times as with three runs."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 1))
    counter = ImageCounter()
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(
        counter(inputs)
    )
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))
    probe = make_probe(model, "features" if method in LAYER_METHODS else None)
    images = RNG.uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    counter.seen.assign(0.0)
    explain_batch(probe, images, np.tile([0, 1, 2], (4, 1)), method)
    assert float(counter.seen.numpy()) == 4
    counter.seen.assign(0.0)
    for k in range(3):
        explain_batch(probe, images, np.full(4, k), method)
    assert float(counter.seen.numpy()) == 12


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_the_registry_says_which_methods_repeat_their_passes(method: str) -> None:
    """An entry without `per` runs a batch in at most two passes of the model's head (as cheap as
    inference, give or take: the benchmark times it on every image); an entry with `per` (channel,
    mask, ...) runs many, which the counter after the target layer sees."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 1))
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    counter = ImageCounter()
    pooled = keras.layers.GlobalAveragePooling2D()(counter(features))
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    probe = make_probe(
        model, "features" if method in LAYER_METHODS else None, parameters={"rise": {"masks": 8}}
    )
    images = RNG.uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    counter.seen.assign(0.0)
    explain_batch(probe, images, np.zeros(4, int), method)
    passes = float(counter.seen.numpy()) / len(images)
    if METHODS_BY_NAME[method].per:
        assert passes > 2, (method, passes)
    else:
        assert 1 <= passes <= 2, (method, passes)


def test_ranked_targets_of_a_single_logit_head() -> None:
    from cxr.explain.methods import resolve_targets

    logits = tf.constant([[2.0], [-1.0]])
    codes = tf.constant([[-1, -2], [-1, -2]])
    np.testing.assert_array_equal(resolve_targets(logits, codes).numpy(), [[1, 0], [0, 1]])
    logits = tf.constant([[0.1, 3.0, 2.0]])
    np.testing.assert_array_equal(
        resolve_targets(logits, tf.constant([[-1, -2, -3, 0]])).numpy(), [[1, 2, 0, 0]]
    )


@pytest.mark.parametrize("several", [False, True])
def test_methods_explained_together_equal_each_alone(model_and_data, several: bool) -> None:
    """explain_methods (#27): the combination methods share one forward and one backward pass;
    every map, logit and class must equal the method's own explain_batch, for one target per
    image and for several, beside a method that runs on its own (saliency)."""
    from cxr.explain.methods import explain_methods

    model, images, targets, references = model_and_data
    combined = [spec.name for spec in METHOD_SPECS if spec.combination]
    assert {"gradcam", "gradcam++", "hirescam", "layercam", "xgradcam"} <= set(combined)
    methods = [*combined, "saliency"]
    wanted = np.stack([targets, (targets + 1) % 3], axis=1) if several else targets
    together = explain_methods(make_probe(model, "features"), images[:7], wanted[:7], methods, 8)
    assert list(together) == methods
    for method in methods:
        alone = explain_batch(make_probe(model, "features"), images[:7], wanted[:7], method, 8)
        for field in ("maps", "raw_maps", "logits", "class_index", "empty"):
            np.testing.assert_allclose(
                getattr(together[method], field), getattr(alone, field), atol=1e-6, err_msg=method
            )
    if not several:  # and Grad-CAM still the textbook's, image by image
        for i in range(7):
            np.testing.assert_allclose(together["gradcam"].maps[i], references[i][1], atol=1e-4)
