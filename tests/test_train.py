"""Training: the run folder, class weights and flips wired into fit, overwrite refusal, resume after
a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from conftest import tiny_config
from PIL import Image

from cxr.config import dump_config
from cxr.data.pipeline import encode_labels, load_split, make_dataset
from cxr.errors import DataError
from cxr.models.metrics import SoftmaxAUC
from cxr.runs import fold_run, lock_path, staging_run
from cxr.train import compute_class_weights, train, train_folds


def test_run_folder_holds_what_later_commands_need(trained_run) -> None:
    run = fold_run(trained_run, 1)
    for path in (run.model, run.config, run.classes, run.split, run.history, run.summary):
        assert path.is_file(), path
    assert list(run.logs.rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert not run.backup.exists(), "the backup of a finished run is removed"
    assert yaml.safe_load(run.config.read_text())["data"]["fold"] == 1
    assert json.loads(run.classes.read_text()) == ["normal", "pneumonia"]
    split = pd.read_csv(run.split, dtype=str)
    validation = split[split["split"] == "validation"]
    assert set(validation["fold"]) == {"1"} and "1" not in set(
        split[split["split"] == "train"]["fold"]
    )
    assert not set(validation["patient_id"]) & set(split[split["split"] == "train"]["patient_id"])
    history = pd.read_csv(run.history)
    assert history["epoch"].tolist() == [0, 1] and {"val_auc", "val_accuracy", "val_loss"} <= set(
        history.columns
    )
    summary = json.loads(run.summary.read_text())
    assert summary["best_value"] == history["val_auc"].max()
    # counted from 1, as Keras prints "Epoch 2/2" and the CLI says "at epoch N"
    assert summary["best_epoch"] == history.loc[history["val_auc"].idxmax(), "epoch"] + 1
    model = keras.models.load_model(run.model, compile=False)
    assert model.output.shape == (None, 2)
    # the .keras file says what it expects, in an entry plain Keras leaves alone
    with zipfile.ZipFile(run.model) as archive:
        about = json.loads(archive.read("cxr.json"))
    assert about["classes"] == ["normal", "pneumonia"]
    assert about["input_shape"] == [*model.input.shape[1:]] == [64, 64, 1]
    # the training curves: a PNG with both panels drawn (not a blank canvas)
    figure = np.asarray(Image.open(run.history_figure).convert("L"))
    assert figure.shape[1] > figure.shape[0] and figure.std() > 10
    # provenance: the digests are those of the files the fold was trained from
    import hashlib

    found = json.loads(run.provenance.read_text())
    labels = (trained_run.data.dataset_dir / "labels.csv").read_bytes()
    assert found["labels_sha256"] == hashlib.sha256(labels).hexdigest()
    assert found["config_sha256"] == hashlib.sha256(run.config.read_bytes()).hexdigest()
    assert found["keras"] == keras.__version__ and found["tensorflow"] == tf.__version__
    assert found["numpy"] == np.__version__ and isinstance(found["gpus"], list)
    from cxr.documents import write_documents as write_model_card

    card = write_model_card(trained_run).read_text()
    assert f"labels.csv sha256 `{found['labels_sha256'][:16]}`" in card
    assert "![Training curves, fold 1](fold1/history.png)" in card


def test_class_weights_are_balanced_by_hand() -> None:
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    weights = compute_class_weights(labels, 3)
    assert weights == pytest.approx({0: 60 / (3 * 30), 1: 60 / (3 * 10), 2: 60 / (3 * 20)})
    with pytest.raises(DataError, match=r"no image of class index\(es\) \[2\]"):
        compute_class_weights(np.array([0, 1, 1]), 3)


def images_of(dataset: Path, table: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(Image.open(dataset / p), dtype=np.float32) for p in table["image"]])


def test_fit_gets_class_weights_and_flips_only_training_data(
    synthetic_dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    seen = {}

    # stands in for Keras: we only inspect its inputs
    def fake_fit(self, x, validation_data, class_weight, **kwargs):
        seen.update(train=x, validation=validation_data, class_weight=class_weight)
        pd.DataFrame({"epoch": [0], "val_auc": [0.5]}).to_csv(
            staging_run(cfg, 2).history, index=False
        )
        self.save(staging_run(cfg, 2).model)  # what the checkpoint would have written

    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    cfg = tiny_config(synthetic_dataset, tmp_path)
    train(cfg, fold=2)
    split = pd.read_csv(fold_run(cfg, 2).split, dtype=str, keep_default_na=False)
    train_rows = split[split["split"] == "train"]
    counts = train_rows["label"].value_counts()
    n = len(train_rows)
    assert seen["class_weight"] == pytest.approx(
        {0: n / (2 * counts["normal"]), 1: n / (2 * counts["pneumonia"])}
    )
    originals = images_of(synthetic_dataset, train_rows)
    flipped = 0
    for batch, _ in seen["train"]:
        for image in batch.numpy()[..., 0]:
            same = np.abs(originals - image).max(axis=(1, 2)).min() < 1e-3
            mirrored = np.abs(originals[:, :, ::-1] - image).max(axis=(1, 2)).min() < 1e-3
            assert same or mirrored
            flipped += mirrored and not same
    assert flipped > 0
    validation = np.concatenate([b.numpy()[..., 0] for b, _ in seen["validation"]])
    np.testing.assert_allclose(
        validation, images_of(synthetic_dataset, split[split["split"] == "validation"]), atol=1e-3
    )


def test_training_into_a_used_folder_is_refused(trained_run) -> None:
    before = fold_run(trained_run, 0).model.stat().st_mtime_ns
    with pytest.raises(DataError, match="already holds a trained run; pass --overwrite"):
        train(trained_run, fold=0)
    assert fold_run(trained_run, 0).model.stat().st_mtime_ns == before


def test_fold_that_does_not_exist(trained_run) -> None:
    with pytest.raises(DataError, match=r"fold 9 does not exist; this dataset has folds 0\.\.4"):
        train(trained_run, fold=9)


def test_resume_without_an_interrupted_run(synthetic_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing to resume"):
        train(tiny_config(synthetic_dataset, tmp_path), fold=0, resume=True)


def test_kill_mid_training_then_resume(
    synthetic_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(
        synthetic_dataset,
        tmp_path,
        "train.epochs=40",
        "train.batch_size=2",
        "train.early_stopping_patience=null",
    )
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    # a fold trains in staging, moved to fold0/ at the end
    run, staging = (
        fold_run(cfg, 0),
        staging_run(cfg, 0),
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cxr.cli", "train", "--config", str(tmp_path / "c.yaml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seen_at: dict[int, float] = {}  # epochs completed -> when first seen
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None and len(seen_at) < 3:
            rows = (
                len(staging.history.read_text().splitlines()) - 1
                if staging.history.is_file()
                else 0
            )
            seen_at.setdefault(rows, time.time())
            time.sleep(0.01)
        assert process.poll() is None, "training ended before it could be interrupted"
        epoch_seconds = seen_at[max(seen_at)] - seen_at[sorted(seen_at)[-2]]
        # kill in the middle of an epoch, far from its bookkeeping at the end
        time.sleep(epoch_seconds / 2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    done_before = pd.read_csv(staging.history)["epoch"].tolist()
    assert staging.backup.is_dir() and len(done_before) >= 2 and not run.folder.exists()
    lock = lock_path(cfg, 0)
    assert str(process.pid) in lock.read_text(), "the killed training's lock is left, stale"
    with pytest.raises(
        DataError, match=r"has an interrupted training in .*: pass --resume to continue it"
    ):
        train(cfg, fold=0)  # neither overwrite nor resume: refused
    resumed_cfg = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"epochs": len(done_before) + 2})}
    )
    with caplog.at_level("WARNING"):
        result = train(resumed_cfg, fold=0, resume=True)
    assert f"a stale lock was taken over: process {process.pid} on" in caplog.text
    assert not lock.exists() and not lock.parent.exists(), "the lock is released on exit"
    epochs = result.history["epoch"].tolist()
    # continued where it stopped: no epoch twice, none lost
    assert epochs == list(range(len(done_before) + 2)), epochs
    assert not run.backup.exists() and not staging.folder.exists()
    # the kept model is the best epoch's, before or after the interruption
    model = keras.models.load_model(run.model, compile=False)
    val_table, names = load_split(synthetic_dataset, 0, "validation")
    logits = model.predict(
        make_dataset(synthetic_dataset, val_table, names, image_size=64).map(lambda x, y: x),
        verbose=0,
    )
    auc = SoftmaxAUC(2)
    auc.update_state(encode_labels(val_table["label"], names), logits)
    assert float(auc.result()) == pytest.approx(result.history["val_auc"].max(), abs=1e-6)


def test_resume_falls_back_when_the_last_backup_metadata_was_cut(tmp_path: Path) -> None:
    """A kill while training_metadata.json is written leaves it empty: resume from the older backup,
    one epoch back."""
    from cxr.train import SafeBackupAndRestore

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == 3:
                raise KeyboardInterrupt  # as if killed after epochs 0, 1 and 2 were backed up

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        built = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        built.compile("adam", "sparse_categorical_crossentropy")
        return built

    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 2
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        model().fit(
            x,
            y,
            epochs=6,
            verbose=0,
            callbacks=[SafeBackupAndRestore(str(backup), double_checkpoint=True), Interrupt()],
        )
    # the next epoch to run
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 3
    (backup / "training_metadata.json").write_text("")  # cut
    with pytest.raises(ValueError):  # what Keras alone does with it
        model().fit(
            x,
            y,
            epochs=6,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True)],
        )
    history = model().fit(
        x,
        y,
        epochs=6,
        verbose=0,
        callbacks=[SafeBackupAndRestore(str(backup), double_checkpoint=True)],
    )
    assert history.epoch == [
        2,
        3,
        4,
        5,
    ]  # the older backup was taken after epoch 1: epoch 2 is redone

    assert not backup.exists()  # a finished fit removes its backups
    backup.mkdir()
    # the first backup cut: no older pair to fall back to
    (backup / "training_metadata.json").write_text('{"epo')
    history = model().fit(
        x,
        y,
        epochs=3,
        verbose=0,
        callbacks=[SafeBackupAndRestore(str(backup), double_checkpoint=True)],
    )
    assert history.epoch == [0, 1, 2]  # from the start, not a traceback


def test_synthetic_config_batchnorm_momentum_keeps_statistics_current(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """After one demo-sized epoch (24 steps), the batch-norm moving statistics must be close to the
    statistics the layer really sees, or validation (inference mode) judges a different model than
    training; at Keras' default momentum 0.99 they are still mostly their initial values."""
    from cxr.config import load_config
    from cxr.data.pipeline import load_split, make_dataset
    from cxr.models.build import build_model
    from cxr.models.metrics import make_loss_and_metrics

    demo = load_config(Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml")
    train_table, names = load_split(synthetic_dataset, 0, "train")
    images = np.concatenate(
        [
            b.numpy()
            for b, _ in make_dataset(
                synthetic_dataset, train_table, names, image_size=64, batch_size=32
            )
        ]
    )
    errors = {}
    for momentum in (0.99, demo.model.batchnorm_momentum):
        narrow = [
            "model.name=pna_cnn",
            "model.widths=[8,8,8,8]",
            f"model.batchnorm_momentum={momentum}",
        ]
        cfg = tiny_config(synthetic_dataset, tmp_path, *narrow)
        keras.utils.set_random_seed(0)
        model = build_model(cfg, 2)
        loss, metrics = make_loss_and_metrics(2, False)
        model.compile(
            optimizer=keras.optimizers.Adam(demo.train.learning_rate), loss=loss, metrics=metrics
        )
        # 24 steps
        epoch = make_dataset(
            synthetic_dataset, train_table, names, image_size=64, batch_size=4, training=True
        )
        model.fit(epoch, epochs=1, verbose=0, shuffle=False)
        bn = model.get_layer("stage1_bn")
        seen = keras.Model(model.input, model.get_layer("stage1_conv").output).predict(
            images, verbose=0
        )
        true_mean, true_std = seen.mean(axis=(0, 1, 2)), seen.std(axis=(0, 1, 2))
        errors[momentum] = float(np.mean(np.abs(bn.moving_mean.numpy() - true_mean) / true_std))
    assert errors[demo.model.batchnorm_momentum] < 0.25, errors
    assert errors[0.99] > 2 * errors[demo.model.batchnorm_momentum], errors


@pytest.fixture(scope="module")
def plain_fold3(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """Fold 3 trained on the plain path (float32, no XLA): the reference for the fast paths."""
    result = train(tiny_config(synthetic_dataset, tmp_path_factory.mktemp("plain")), fold=3)
    return result, keras.models.load_model(result.run.model, compile=False).get_weights()


def test_same_seed_same_model(synthetic_dataset: Path, tmp_path: Path, plain_fold3) -> None:
    """Shuffling, stateless flips and initial weights all follow experiment.seed: two runs give
    identical weights."""
    result = train(tiny_config(synthetic_dataset, tmp_path / "b"), fold=3)
    weights = [
        plain_fold3[1],
        keras.models.load_model(result.run.model, compile=False).get_weights(),
    ]
    assert all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))
    other = train(tiny_config(synthetic_dataset, tmp_path / "c", "experiment.seed=1"), fold=3)
    changed = keras.models.load_model(other.run.model, compile=False).get_weights()
    assert any(not np.array_equal(x, y) for x, y in zip(weights[0], changed, strict=True))


def test_xla_training_matches_the_plain_path(
    synthetic_dataset: Path, tmp_path: Path, plain_fold3
) -> None:
    """train.xla compiles the step with XLA; same data order and flips, so the same model up to
    float round-off."""
    reference, plain = plain_fold3
    result = train(tiny_config(synthetic_dataset, tmp_path, "train.xla=true"), fold=3)
    compiled = keras.models.load_model(result.run.model, compile=False).get_weights()
    # Adam divides by each gradient's running RMS, so round-off in a near-zero gradient can flip a
    # small bias's
    # steps (lr 0.01): single weights may differ by ~0.02, the model as a whole barely moves
    flat = lambda weights: np.concatenate([w.ravel() for w in weights])  # noqa: E731
    assert np.linalg.norm(flat(compiled) - flat(plain)) < 0.01 * np.linalg.norm(flat(plain))
    np.testing.assert_allclose(result.history["loss"], reference.history["loss"], rtol=2e-3)
    np.testing.assert_allclose(result.history["val_loss"], reference.history["val_loss"], rtol=2e-3)


def test_mixed_precision_training_tracks_the_plain_path(
    synthetic_dataset: Path, tmp_path: Path, plain_fold3, monkeypatch
) -> None:
    """train.mixed_precision (allowed here as if on a GPU): float16 layers, float32 logits and
    weights, loss scaling; close to float32."""
    from cxr.models import precision

    reference, _ = plain_fold3
    monkeypatch.setattr(precision, "gpu_available", lambda: True)
    try:
        result = train(
            tiny_config(synthetic_dataset, tmp_path, "train.mixed_precision=true"), fold=3
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = keras.models.load_model(result.run.model, compile=False)
    assert (
        model.get_layer("features").compute_dtype == "float16"
        and model.layers[-1].compute_dtype == "float32"
    )
    assert all(w.dtype == "float32" for w in model.weights)
    first = result.history.iloc[0]
    # epoch 1, before paths diverge
    np.testing.assert_allclose(first["loss"], reference.history.iloc[0]["loss"], rtol=0.02)
    assert np.isfinite(result.history[["loss", "val_loss"]].to_numpy()).all()


def test_training_from_a_cache_file_matches_streaming(
    synthetic_dataset: Path, tmp_path: Path, plain_fold3
) -> None:
    """data.cache=<folder>: the first epoch writes the cache file, the second reads it; the same
    pixels, so the same model."""
    _, plain = plain_fold3
    result = train(
        tiny_config(synthetic_dataset, tmp_path / "runs", f"data.cache={tmp_path / 'cache'}"),
        fold=3,
    )
    assert len(list((tmp_path / "cache").glob("*.index"))) == 2  # training and validation splits
    cached = keras.models.load_model(result.run.model, compile=False).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(plain, cached, strict=True))


def test_mirrored_strategy_over_two_logical_cpus(synthetic_dataset: Path, tmp_path: Path) -> None:
    """train.devices runs MirroredStrategy; two logical CPU devices stand in for two GPUs (set
    before TF starts)."""
    cfg = tiny_config(
        synthetic_dataset, tmp_path, "train.epochs=1", 'train.devices=["/cpu:0", "/cpu:1"]'
    )
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    script = (
        "import tensorflow as tf, sys\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] "
        "* 2)\n"
        "from cxr.cli import app\n"
        f"sys.argv = ['cxr', '-v', 'train', '--config', {str(tmp_path / 'c.yaml')!r}]\n"
        "app()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training on 2 devices (MirroredStrategy)" in result.stderr
    assert fold_run(cfg, 0).model.is_file()


def test_an_image_corrupted_after_download_is_named_not_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cxr.cli import app
    from cxr.data.sources import DownloadOptions, download

    dataset = download(
        "synthetic",
        DownloadOptions(dest=tmp_path / "data", n=24, size=64, folds=2, show_progress=False),
    )
    victim = sorted((dataset / "images").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated after the dataset was written
    cfg = tiny_config(dataset, tmp_path / "runs", "train.epochs=1")
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml")])
    assert result.exit_code == 1, result.output
    assert f"1 image(s) in {dataset} cannot be decoded: images/{victim.name}" in result.output


def test_the_saved_model_loads_in_plain_keras(trained_run, tmp_path: Path) -> None:
    """model.keras needs no cxr: a process that never imports it loads the file with Keras."""
    path = fold_run(trained_run, 0).model
    code = (
        "import sys, keras; model = keras.saving.load_model(sys.argv[1]); "
        "assert not any(m.startswith('cxr') for m in sys.modules); print(model.count_params())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = keras.models.load_model(path, compile=False).count_params()
    assert int(done.stdout.split()[-1]) == expected


def test_learning_rate_schedules_and_loss_jumps() -> None:
    import pandas as pd

    from cxr.config import load_config
    from cxr.train import cosine_rate, learning_rate_callback, loss_jumps

    assert learning_rate_callback(load_config(None).train) is None
    plateau = learning_rate_callback(load_config(None, ["train.lr_schedule=plateau"]).train)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.factor == 0.5
    cosine = load_config(None, ["train.lr_schedule=cosine", "train.epochs=4"]).train
    callback = learning_rate_callback(cosine)
    rates = [callback.schedule(epoch) for epoch in range(4)]
    # 2e-4 * (1 + cos(pi e / 4)) / 2 for e = 0..3
    np.testing.assert_allclose(rates, [2e-4, 1.7071e-4, 1e-4, 0.2929e-4], rtol=1e-4)
    assert cosine_rate(1.0, 2, 4) == pytest.approx(0.5)
    history = pd.DataFrame({"epoch": [0, 1, 2, 3], "val_loss": [0.7, 0.6, 17.7, 0.5]})
    assert loss_jumps(history) == ["epoch 3: 0.6 -> 17.7"]
    assert loss_jumps(history.assign(val_loss=[0.7, 0.6, 5.9, 0.5])) == []


def start_training(cfg, folder: Path, *args: str) -> subprocess.Popen:
    """`cxr train` of `cfg` in a process of its own."""
    (folder / "c.yaml").write_text(dump_config(cfg))
    return subprocess.Popen(
        [sys.executable, "-m", "cxr.cli", "train", "--config", str(folder / "c.yaml"), *args],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: os.umask(0o002),  # a lab group's umask: not the usual 022
    )


def test_a_fold_in_training_is_locked(synthetic_dataset: Path, tmp_path: Path) -> None:
    """#23: a second train, resume or overwrite of a fold that is training is refused with one
    line naming the process, and so are evaluate, explain and audit of it; the first finishes
    untouched."""
    from typer.testing import CliRunner

    from cxr.cli import app

    cfg = tiny_config(
        synthetic_dataset,
        tmp_path,
        "train.epochs=8",
        "train.batch_size=2",
        "train.early_stopping_patience=null",
    )
    first = start_training(cfg, tmp_path)
    staging = staging_run(cfg, 0)
    try:
        deadline = time.time() + 120
        while first.poll() is None and time.time() < deadline and not staging.history.is_file():
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[0]
        running = f"is being trained by process {first.pid} on"
        for kwargs in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(DataError, match=running):
                train(cfg, fold=0, **kwargs)
        # --all-folds names the locked fold before training any other
        with pytest.raises(DataError, match=running):
            train_folds(cfg, None, overwrite=True)
        assert not fold_run(cfg, 1).folder.exists()
        config = str(tmp_path / "c.yaml")
        for args in (["evaluate"], ["explain"], ["audit"], ["train", "--overwrite"]):
            result = CliRunner().invoke(app, [*args, "--config", config])
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert result.exit_code == 1 and len(errors) == 1 and running in errors[0], (
                args,
                result.output,
            )
            assert "Traceback" not in result.output
        assert first.poll() is None, "the first training was still running during every refusal"
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output
    history = pd.read_csv(fold_run(cfg, 0).history)
    assert history["epoch"].tolist() == list(range(8)), "no epoch lost or repeated"
    assert fold_run(cfg, 0).model.is_file() and not lock_path(cfg, 0).exists()
    # #23: TensorBoard's folders follow the umask like every other file of the run
    logs = [fold_run(cfg, 0).logs, *fold_run(cfg, 0).logs.rglob("*")]
    assert {p.stat().st_mode & 0o777 for p in logs if p.is_dir()} == {0o775}
    assert {p.stat().st_mode & 0o777 for p in logs if p.is_file()} == {0o664}


def test_a_training_killed_during_its_final_save_is_moved_into_place(
    trained_run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """#23: a staged fold with its model and summary but no backup had finished; the next train
    (or --resume) moves it into place instead of training again from epoch 1."""
    import shutil

    for resume in (False, True):
        cfg = trained_run.model_copy(
            update={
                "experiment": trained_run.experiment.model_copy(
                    update={"output_dir": tmp_path / str(resume)}
                )
            }
        )
        staging = staging_run(cfg, 1)
        shutil.copytree(fold_run(trained_run, 1).folder, staging.folder)  # as if killed before
        weights = keras.models.load_model(staging.model, compile=False).get_weights()
        with caplog.at_level("WARNING"):
            result = train(cfg, fold=1, resume=resume)
        assert "had finished training" in caplog.text
        moved = keras.models.load_model(fold_run(cfg, 1).model, compile=False).get_weights()
        assert all(np.array_equal(a, b) for a, b in zip(weights, moved, strict=True))
        assert not staging.folder.exists()
        assert result.history["epoch"].tolist() == [0, 1], "not trained again"
