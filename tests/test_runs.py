import errno
import io
import os
import time
import zipfile

import keras
import numpy as np
import pytest

import dogvae.model  # noqa: F401 - registers the custom layers for keras.models.load_model
from dogvae import atomic, runs
from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.latent import latent_statistics
from dogvae.loaded_run import load_run
from dogvae.model import build_decoder, build_encoder

SEED = ModelConfig()
# Every layer kind the presets use: batch norm, SiLU, a decoder wider than the mirror, the clamp.
SILU = ModelConfig(
    latent_dim=2,
    conv_filters=(8, 16),
    dense_units=0,
    decoder_filters=(24, 8),
    batch_norm=True,
    logvar_clamp=10.0,
    activation="silu",
)
STATS = latent_statistics(np.random.default_rng(0).normal(size=(50, 2)))


def save(path, encoder=None, decoder=None, model_config=SEED, **kw):
    encoder = encoder or build_encoder(model_config)
    decoder = decoder or build_decoder(model_config)
    history = [
        {
            "epoch": 1,
            "batches": 3,
            "loss": 10.0,
            "reconstruction": 9.0,
            "kl": 1.0,
            "val_loss": 11.0,
            "val_reconstruction": 10.0,
            "val_kl": 1.0,
            "seconds": 0.5,
            "kl_weight": 1.0,
            "active_units": 2,
            "kl_per_dim": [0.5, 0.5],
        }
    ]
    return runs.save_run(
        path,
        encoder,
        decoder,
        model_config=model_config,
        train_config=TrainConfig(epochs=1),
        data_config=DataConfig(),
        data={"source": "x.csv", "readable": 3, "unreadable": [{}]},
        history=history,
        preset="seed",
        latent_stats=kw.pop("latent_stats", STATS),
        **kw,
    )


@pytest.mark.parametrize("config", [SEED, SILU], ids=["seed", "silu-batchnorm"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, config):
    encoder, decoder = build_encoder(config), build_decoder(config)
    run_dir = save(tmp_path / "run", encoder, decoder, model_config=config)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(runs.RUN_FILES)
    loaded = load_run(run_dir)
    images = np.random.default_rng(0).random((4, 64, 64, 1)).astype("float32")
    z = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")
    np.testing.assert_array_equal(loaded.decoder(z), decoder(z))
    np.testing.assert_array_equal(loaded.encoder(images)[0], encoder(images)[0])
    np.testing.assert_array_equal(loaded.encoder(images)[1], encoder(images)[1])
    assert loaded.info.model_config == config
    assert loaded.info.config["parameters"] == {
        "encoder": encoder.count_params(),
        "decoder": decoder.count_params(),
    }
    if config == SEED:
        assert loaded.info.config["parameters"] == {"encoder": 281_044, "decoder": 104_833}
    assert loaded.info.config["data"]["unreadable_count"] == 1


@pytest.mark.parametrize("config", [SEED, SILU], ids=["seed", "silu-batchnorm"])
def test_h5_files_load_like_the_originals(tmp_path, config):
    encoder, decoder = build_encoder(config), build_decoder(config)
    run_dir = save(tmp_path / "run", encoder, decoder, model_config=config)
    decoder_h5 = keras.models.load_model(run_dir / "decoder.h5", compile=False)
    encoder_h5 = keras.models.load_model(run_dir / "encoder.h5", compile=False)
    assert decoder_h5.input_shape == (None, 2) and decoder_h5.output_shape == (None, 64, 64, 1)
    z = np.random.default_rng(2).normal(size=(3, 2)).astype("float32")
    out = np.asarray(decoder_h5(z))
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, decoder(z))
    images = np.random.default_rng(3).random((2, 64, 64, 1)).astype("float32")
    np.testing.assert_array_equal(encoder_h5(images)[0], encoder(images)[0])


def test_history_round_trip(tmp_path):
    rows = runs.read_history(save(tmp_path / "run"))
    assert rows[0]["loss"] == 10.0 and rows[0]["kl_per_dim"] == [0.5, 0.5]


def test_saving_over_a_run_replaces_it_and_leaves_no_temp_folders(tmp_path):
    save(tmp_path / "run")
    encoder = build_encoder(SEED)
    save(tmp_path / "run", encoder=encoder)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    loaded = load_run(tmp_path / "run")
    np.testing.assert_array_equal(loaded.encoder.get_weights()[0], encoder.get_weights()[0])


def test_a_failed_save_leaves_the_existing_run_intact(tmp_path, monkeypatch):
    save(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "_write_text", disk_full)
    with pytest.raises(OSError, match=r"could not save the run.*No space left"):
        save(tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_an_interrupted_swap_is_recovered(tmp_path):
    save(tmp_path / "run")
    # What a kill between the two renames leaves behind: only the old copy.
    os.rename(tmp_path / "run", tmp_path / ".run.old-1234abcd")
    found, problems = runs.list_runs(tmp_path)
    assert [info.name for info in found] == ["run"] and not problems
    load_run(tmp_path / "run")


def test_the_leftovers_of_a_save_that_died_are_cleared_but_not_a_save_in_progress(tmp_path):
    save(tmp_path / "run")
    dead = tmp_path / f".run{atomic.TEMP_MARK}dead0000"
    running = tmp_path / f".run{atomic.TEMP_MARK}busy0000"
    for folder in (dead, running):
        folder.mkdir()
        (folder / "encoder.h5").write_bytes(b"half")
    an_hour_ago = time.time() - 2 * 3600
    os.utime(dead, (an_hour_ago, an_hour_ago))
    leftover = tmp_path / f".run{atomic.OLD_MARK}1234abcd"  # the old copy, after the swap
    leftover.mkdir()
    actions = runs.recover_runs(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", running.name])
    assert len(actions) == 2 and [info.name for info in runs.list_runs(tmp_path)[0]] == ["run"]


def test_refuses_to_overwrite_what_is_not_a_run(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "dog.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a dogvae run"):
        save(tmp_path / "photos")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        save(tmp_path / "file")
    assert (tmp_path / "photos" / "dog.jpg").read_bytes() == b"x"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"format": "other"}'), "lacks format"),
        (lambda d: (d / "decoder.keras").unlink(), "decoder.keras missing"),
        (lambda d: (d / "encoder.keras").write_bytes(b"garbage"), "cannot load"),
    ],
)
def test_broken_runs_give_clear_errors(tmp_path, damage, message):
    run_dir = save(tmp_path / "run")
    damage(run_dir)
    with pytest.raises(ValueError, match=message):
        load_run(run_dir)
    found, problems = runs.list_runs(tmp_path)
    assert not found and problems[0][0] == run_dir


def test_list_delete_and_zip(tmp_path):
    save(tmp_path / "a")
    save(tmp_path / "b")
    found, _ = runs.list_runs(tmp_path)
    assert sorted(info.name for info in found) == ["a", "b"]
    with zipfile.ZipFile(io.BytesIO(runs.zip_run(tmp_path / "a"))) as archive:
        assert sorted(archive.namelist()) == sorted(f"a/{name}" for name in runs.RUN_FILES)
    runs.delete_run(tmp_path / "a")
    assert [info.name for info in runs.list_runs(tmp_path)[0]] == ["b"]
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="not a dogvae run"):
        runs.delete_run(tmp_path / "photos")
    assert (tmp_path / "photos").exists()


def test_latent_statistics_round_trip_and_damage(tmp_path):
    run_dir = save(tmp_path / "run")
    stats = runs.read_latent_stats(run_dir)
    for name in ("mean", "components", "variances", "points"):
        np.testing.assert_allclose(getattr(stats, name), getattr(STATS, name), rtol=1e-6)
    (run_dir / "latent_stats.npz").write_bytes(b"not an npz")
    assert runs.read_latent_stats(run_dir) is None
    without = save(tmp_path / "older", latent_stats=None)
    assert runs.read_latent_stats(without) is None
    load_run(without)  # still a valid run


def test_latent_statistics_keep_the_codes_log_variances_and_can_be_rewritten(tmp_path):
    run_dir = save(tmp_path / "run")
    assert runs.read_latent_stats(run_dir).point_log_vars is None  # an older run's file
    rng = np.random.default_rng(1)
    means = rng.normal(size=(80, 2))
    log_vars = rng.uniform(-3, 0, means.shape)
    before = {name: (run_dir / name).read_bytes() for name in ("config.json", "decoder.keras")}
    runs.write_latent_stats(run_dir, latent_statistics(means, log_vars))
    stats = runs.read_latent_stats(run_dir)
    np.testing.assert_allclose(stats.points, means.astype(np.float32))
    np.testing.assert_allclose(stats.point_log_vars, log_vars.astype(np.float32))
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert not list(run_dir.glob(".*tmp*"))
    # Log-variances that do not fit the points are dropped, the rest is kept.
    with (run_dir / runs.LATENT_STATS).open("wb") as handle:
        np.savez(
            handle,
            mean=stats.mean,
            components=stats.components,
            variance=stats.variances,
            points=stats.points,
            point_log_vars=log_vars[:5],
        )
    damaged = runs.read_latent_stats(run_dir)
    assert damaged.point_log_vars is None and damaged.points.shape == (80, 2)
    with pytest.raises(ValueError, match="not a dogvae run"):
        runs.write_latent_stats(tmp_path, stats)


def test_latent_statistics_never_unpickle(tmp_path):
    run_dir = save(tmp_path / "run")
    evil = np.array([{"x": 1}], dtype=object)
    with (run_dir / "latent_stats.npz").open("wb") as handle:
        np.savez(handle, mean=evil, components=evil, variance=evil, points=evil)
    assert runs.read_latent_stats(run_dir) is None


def test_saves_under_one_name_at_the_same_moment_never_replace_each_other(tmp_path):
    """Two sessions saving "run" at once (replace=False): each gets a folder of its own."""
    import threading

    save(tmp_path / "run")  # saved while the others trained
    encoders = [build_encoder(SEED) for _ in range(3)]
    ready = threading.Barrier(3)
    placed: dict[int, object] = {}

    def save_as(index: int) -> None:
        ready.wait()
        placed[index] = save(tmp_path / "run", encoder=encoders[index], replace=False)

    threads = [threading.Thread(target=save_as, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(path.name for path in placed.values()) == ["run-2", "run-3", "run-4"]
    for index, path in placed.items():
        weights = load_run(path).encoder.get_weights()
        np.testing.assert_array_equal(weights[0], encoders[index].get_weights()[0])
    assert runs.read_run_info(tmp_path / "run").path.is_dir()  # the first is still there
    assert not [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".")]


def test_a_save_that_keeps_existing_runs_takes_no_file_or_folder_with_files(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("keep me")  # not a run: still not replaced
    (tmp_path / "run-2").write_text("a file")
    assert save(tmp_path / "run", replace=False) == tmp_path / "run-3"
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "run-2").read_text() == "a file"


def test_a_batch_normalised_decoder_is_saved_with_keras_own_layers_only(tmp_path):
    """Training normalises with dogvae's FusedBatchNormalization, but the files keep
    Keras' own BatchNormalization: a script written for the seed loads decoder.h5 and
    decoder.keras with plain Keras, without dogvae, and gets the same images."""
    import json as json_module

    from dogvae.model import FusedBatchNormalization
    from tests.conftest import run_python

    encoder, decoder = build_encoder(SILU), build_decoder(SILU)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in decoder.layers)
    norm = decoder.get_layer("deconv_1_bn")
    norm.set_weights([w + 0.25 for w in norm.get_weights()])  # not the initial weights
    run_dir = save(tmp_path / "run", encoder, decoder, model_config=SILU)
    with zipfile.ZipFile(run_dir / "decoder.keras") as archive:
        saved = json_module.loads(archive.read("config.json"))
    kinds = {layer["class_name"] for layer in saved["config"]["layers"]}
    assert "BatchNormalization" in kinds and "FusedBatchNormalization" not in kinds
    z = np.array([[0.3, -1.2]], np.float32)
    np.save(tmp_path / "z.npy", z)
    script = (
        "import sys, keras, numpy as np\n"
        "z = np.load(sys.argv[1])\n"
        "for name in ('decoder.h5', 'decoder.keras'):\n"
        "    model = keras.models.load_model(sys.argv[2] + '/' + name, compile=False)\n"
        "    np.save(sys.argv[2] + '/' + name + '.npy', np.asarray(model(z)))\n"
        "assert 'dogvae' not in sys.modules\n"
    )
    done = run_python("-c", script, str(tmp_path / "z.npy"), str(run_dir), timeout_s=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = np.asarray(decoder(z))
    for name in ("decoder.h5", "decoder.keras"):
        np.testing.assert_allclose(np.load(run_dir / f"{name}.npy"), expected, atol=1e-6)


def test_the_runs_folder_lock_excludes_a_second_holder_but_never_stops_a_save(tmp_path):
    """atomic.folder_lock: a second holder waits for the first; one that waited too long
    goes on without the lock (the lock guards a race and must not hang a save)."""
    import threading

    with atomic.folder_lock(tmp_path) as held:
        assert held
        started = time.monotonic()
        with atomic.folder_lock(tmp_path, wait=0.3) as second:
            assert not second  # went on without it
        assert 0.25 < time.monotonic() - started < 5
        order: list[str] = []

        def later():
            with atomic.folder_lock(tmp_path) as got:
                order.append(f"second {got}")

        thread = threading.Thread(target=later)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(10)
    assert order == ["first done", "second True"]
