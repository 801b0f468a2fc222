"""Config loading: defaults, overrides, and one clear error for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxr.config import Config, dump_config, load_config
from cxr.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["pna", "cardiomegaly", "synthetic", "default"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert isinstance(cfg, Config)


def test_default_yaml_states_every_schema_default() -> None:
    documented = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    assert documented == yaml.safe_load(dump_config(Config()))


def test_seed_settings_in_shipped_configs() -> None:
    pna = load_config(REPO / "configs" / "pna.yaml")
    assert (pna.model.name, pna.data.image_size, pna.data.channels, pna.train.learning_rate) == (
        "pna_cnn",
        512,
        1,
        2e-4,
    )
    cardio = load_config(REPO / "configs" / "cardiomegaly.yaml")
    assert (
        cardio.model.name,
        cardio.data.image_size,
        cardio.train.class_weights,
        cardio.train.flip,
    ) == (
        "vgg16_cardiomegaly",
        512,
        True,
        True,
    )


def test_overrides_are_typed_and_validated(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "train:\n  epochs: 5\n"),
        ["train.epochs=3", "data.image_size=128", "model.widths=[8, 16]"],
    )
    assert (cfg.train.epochs, cfg.data.image_size, cfg.model.widths) == (3, 128, [8, 16])
    assert cfg.train.batch_size == 16  # untouched defaults stay


def test_config_is_frozen() -> None:
    cfg = load_config(None)
    with pytest.raises(Exception, match="frozen"):
        cfg.train.epochs = 3  # type: ignore[misc]


BAD_FILES = [
    (
        "unknown key",
        "train:\n  epohcs: 3\n",
        r"c\.yaml: unknown key 'train\.epohcs'; did you mean 'epochs'\?",
    ),
    ("unknown section", "trian:\n  epochs: 3\n", r"unknown key 'trian'; did you mean 'train'\?"),
    (
        "wrong type",
        "train:\n  epochs: ten\n",
        r"train\.epochs = 'ten' is not allowed: Input should be a valid integer",
    ),
    ("float for int", "train:\n  batch_size: 2.5\n", r"train\.batch_size = 2\.5 is not allowed"),
    (
        "out of range",
        "train:\n  learning_rate: -0.1\n",
        r"train\.learning_rate = -0\.1 is not allowed: Input should be greater than 0",
    ),
    (
        "not in choices",
        "model:\n  name: resnet\n",
        r"model\.name = 'resnet' is not allowed: Input should be 'pna_cnn'",
    ),
    (
        "channels",
        "data:\n  channels: 2\n",
        r"data\.channels = 2 is not allowed: Input should be 1 or 3",
    ),
    (
        "colour map",
        "explain:\n  colormap: jett\n",
        r"explain\.colormap = 'jett' is not allowed: unknown matplotlib colour map; did you mean "
        r"jet",
    ),
    (
        "section not mapping",
        "train: 5\n",
        r"train = 5 is not allowed: Input should be a valid dictionary",
    ),
    (
        "unreadable yaml",
        "train:\n  epochs: [3\n",
        r"c\.yaml: unreadable YAML at line \d+, column \d+",
    ),
    ("top level list", "- 1\n- 2\n", r"the top level must be a mapping of sections, got list"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_config_files(tmp_path: Path, case: str, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


BAD_OVERRIDES = [
    (
        ["train.epochs=0"],
        r"override 'train\.epochs=0': train\.epochs = 0 is not allowed: Input should be greater "
        r"than or equal to 1",
    ),
    (
        ["train.epoch=3"],
        r"override 'train\.epoch=3': unknown key 'train\.epoch'; did you mean 'epochs'\?",
    ),
    (["epochs"], r"override 'epochs': expected SECTION\.KEY=VALUE"),
    (["=3"], r"expected SECTION\.KEY=VALUE"),
    (["train..epochs=3"], r"expected SECTION\.KEY=VALUE"),
    (["train.epochs.x=1"], r"override 'train\.epochs\.x=1'"),
    (
        ["data.image_size=8"],
        r"data\.image_size = 8 is not allowed: Input should be greater than or equal to 16",
    ),
    (
        ["data.cache=' '"],
        r"data\.cache = ' ' is not allowed: use false, true, memory, or a folder for cache files",
    ),
    (
        ["explain.xla=maybe"],
        r"explain\.xla = 'maybe' is not allowed: Input should be a valid boolean",
    ),
]


def test_cache_forms() -> None:
    assert [
        load_config(None, [f"data.cache={v}"]).data.cache
        for v in ("false", "true", "memory", "/scratch/cxr")
    ] == [False, True, "memory", "/scratch/cxr"]


@pytest.mark.parametrize(
    ("overrides", "pattern"), BAD_OVERRIDES, ids=[o[0][0] for o in BAD_OVERRIDES]
)
def test_bad_overrides(overrides: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: nope\.yaml"):
        load_config("nope.yaml")
