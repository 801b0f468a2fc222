"""Architectures against the seeds (shapes, parameter counts), preprocessing against
keras.applications, weights."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from helpers import serve

from cxr.catalogs import models as catalog
from cxr.catalogs.models import get_model_spec
from cxr.config import DataConfig, load_config
from cxr.errors import ConfigError
from cxr.models.build import build_model


def config(name: str, size: int, channels: int = 1, *extra: str):
    return load_config(
        None, [f"model.name={name}", f"data.image_size={size}", f"data.channels={channels}", *extra]
    )


def conv_params(cin: int, cout: int) -> int:
    return 9 * cin * cout + cout


def test_pna_cnn_matches_seed_000_at_512() -> None:
    model = build_model(config("pna_cnn", 512), 2)
    widths = [16, 32, 48, 64, 80, 96]
    assert model.get_layer("stem").output.shape == (None, 512, 512, 16)
    for stage, filters in enumerate(widths[1:], start=1):
        size = 512 // 2**stage
        assert model.get_layer(f"stage{stage}_down").output.shape == (None, size, size, filters)
    # "a (16, 16) feature map", as the seed says
    assert model.get_layer("features").output.shape == (
        None,
        16,
        16,
        96,
    )
    assert model.output.shape == (None, 2)
    # conv + batch norm (gamma, beta, moving mean, moving variance)
    expected = conv_params(1, 16) + 4 * 16
    cin = 16
    for filters in widths[1:]:
        expected += conv_params(cin, filters) + conv_params(filters, filters) + 2 * 4 * filters
        cin = filters
    expected += 96 * 2 + 2
    assert model.count_params() == expected
    assert model.get_layer("logits").activation is keras.activations.linear


def test_pna_cnn_widths_are_configurable() -> None:
    model = build_model(config("pna_cnn", 64, 1, "model.widths=[4,8,12]"), 3)
    assert model.get_layer("features").output.shape == (
        None,
        16,
        16,
        12,
    ) and model.output.shape == (None, 3)


def test_vgg16_cardiomegaly_matches_seed_003_summary() -> None:
    model = build_model(config("vgg16_cardiomegaly", 512), 2)
    base = sum(
        layer.count_params()
        for layer in model.layers
        if layer.name.startswith(("block1", "block2", "block3", "block4", "block5"))
    )
    assert base == 14_714_688  # the seed's "vgg16 (Model) ... 14714688"
    shapes = {
        "block5_pool": (16, 16, 512),
        "block6_conv1": (14, 14, 512),
        "block6_conv3": (10, 10, 512),
        "block6_pool": (5, 5, 512),
    }
    for name, shape in shapes.items():
        assert model.get_layer(name).output.shape == (None, *shape)
    assert model.get_layer("flatten").output.shape == (None, 12_800)
    head = 3 * conv_params(512, 512) + (12_800 * 100 + 100) + (100 * 20 + 20) + (20 * 2 + 2)
    assert model.count_params() == 14_714_688 + head
    assert [model.get_layer(n).rate for n in ("dropout_1", "dropout_2")] == [0.1, 0.1]


@pytest.mark.parametrize(
    ("name", "size", "channels"),
    [("resnet50", 32, 1), ("densenet121", 32, 3), ("inception_v3", 75, 1)],
)
def test_backbones_build_flat_predict_save_and_load(
    tmp_path: Path, name: str, size: int, channels: int
) -> None:
    model = build_model(config(name, size, channels), 3)
    # flat: every layer reachable
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    layer = model.get_layer(get_model_spec(name).explain_layer)
    assert len(layer.output.shape) == 4
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, channels)).astype("float32")
    logits = model.predict(images, verbose=0)
    assert logits.shape == (2, 3)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), logits, rtol=1e-4, atol=1e-4)
    assert loaded.get_layer(layer.name).output.shape == layer.output.shape


@pytest.mark.parametrize(
    ("name", "size", "reference"),
    [
        ("vgg16_cardiomegaly", 256, keras.applications.vgg16.preprocess_input),
        ("resnet50", 32, keras.applications.resnet50.preprocess_input),
        ("densenet121", 32, keras.applications.densenet.preprocess_input),
        ("inception_v3", 75, keras.applications.inception_v3.preprocess_input),
    ],
)
def test_in_model_preprocessing_equals_keras_applications(name: str, size: int, reference) -> None:
    model = build_model(config(name, size), 2)
    first_backbone_layer = next(
        i
        for i, layer in enumerate(model.layers)
        if layer.name not in ("pixels", "grey_to_rgb", "imagenet_norm", "scale")
    )
    front = keras.Model(model.input, model.layers[first_backbone_layer - 1].output)
    grey = np.random.default_rng(1).integers(0, 256, (2, size, size, 1)).astype("float32")
    expected = reference(np.repeat(grey, 3, axis=-1).copy())
    np.testing.assert_allclose(front.predict(grey, verbose=0), expected, rtol=1e-5, atol=1e-3)


def test_local_weights_file(tmp_path: Path) -> None:
    cfg = config("pna_cnn", 32, 1, "model.widths=[4,8]")
    source = build_model(cfg, 2)
    source.save_weights(tmp_path / "w.weights.h5")
    loaded = build_model(
        config(
            "pna_cnn", 32, 1, "model.widths=[4,8]", f"model.weights={tmp_path / 'w.weights.h5'}"
        ),
        2,
    )
    for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def write_legacy_h5(
    model: keras.Model, path: Path, rng: np.random.Generator
) -> dict[str, list[np.ndarray]]:
    """Weights in the legacy Keras h5 layout that keras.applications publishes (layer_names,
    weight_names)."""
    values = {}
    with h5py.File(path, "w") as f:
        names = [layer.name for layer in model.layers]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for layer in model.layers:
            group = f.create_group(layer.name)
            arrays = [rng.normal(0, 0.01, w.shape).astype("float32") for w in layer.weights]
            group.attrs["weight_names"] = [
                f"{layer.name}/w{i}".encode() for i in range(len(arrays))
            ]
            for i, array in enumerate(arrays):
                group.create_dataset(f"{layer.name}/w{i}", data=array)
            values[layer.name] = arrays
    return values


def test_imagenet_weights_download_from_a_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_model_spec("vgg16_cardiomegaly")
    published = keras.applications.VGG16(include_top=False, weights=None, input_shape=(256, 256, 3))
    weights = write_legacy_h5(published, tmp_path / "notop.h5", np.random.default_rng(0))
    data = (tmp_path / "notop.h5").read_bytes()
    # the test's file stands in for the published one: same name, its own md5
    own = dataclasses.replace(spec.imagenet, md5=hashlib.md5(data).hexdigest())
    monkeypatch.setitem(
        catalog.MODELS_BY_NAME, "vgg16_cardiomegaly", dataclasses.replace(spec, imagenet=own)
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with serve({spec.imagenet.filename: data}) as base:
        monkeypatch.setenv("CXR_WEIGHTS_MIRROR", base)
        model = build_model(config("vgg16_cardiomegaly", 256, 1, "model.weights=imagenet"), 2)
    np.testing.assert_array_equal(
        model.get_layer("block3_conv2").get_weights()[0], weights["block3_conv2"][0]
    )
    assert (tmp_path / "keras" / "models" / spec.imagenet.filename).is_file()


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            ["model.name=vgg16_cardiomegaly", "data.image_size=128"],
            "too small for vgg16_cardiomegaly: it needs at least 256",
        ),
        (
            ["model.name=pna_cnn", "model.weights=imagenet"],
            "'imagenet' is not available for pna_cnn",
        ),
        (["model.weights=/no/such.h5"], "no such file"),
    ],
)
def test_model_config_errors(overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_model(load_config(None, overrides), 2)


def test_every_model_builds_with_its_explain_layer_and_the_docs_list_it() -> None:
    """Each catalog entry builds at its smallest size through its body function, has the layer its
    entry names, and fails one pixel smaller; docs/training.md carries the generated table."""
    from cxr.catalogs.models import MODEL_SPECS, models_markdown

    rules = DataConfig.model_fields["image_size"].metadata
    floor = next(rule.ge for rule in rules if getattr(rule, "ge", None))
    for spec in MODEL_SPECS:
        # the docs' table claims no size that the config refuses
        assert spec.min_size >= floor, spec.name
        channels = 3 if spec.imagenet else 1
        model = build_model(config(spec.name, spec.min_size, channels), 2)
        assert len(model.get_layer(spec.explain_layer).output.shape) == 4, spec.name
        if spec.min_size > floor:
            with pytest.raises(ConfigError, match="too small"):
                build_model(config(spec.name, spec.min_size - 1, channels), 2)
    readme = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert models_markdown() in readme
