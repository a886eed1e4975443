"""tf.distribute: training on two replicas matches one device on the same batches."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dogvae.training.distribute import is_chief

REPO = Path(__file__).resolve().parents[1]

# Logical devices must be configured before TensorFlow initialises, so the
# comparison runs in a fresh interpreter.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    from dogvae.config import ModelConfig
    from dogvae.model import build_vae

    config = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 32, 32, 1)).astype(np.uint8)

    def run(strategy):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            vae = build_vae(config)
            # Near-zero posterior noise: the replicas' and the single device's random
            # draws differ, everything else must agree.
            head = vae.encoder.get_layer("z_log_var")
            kernel, bias = head.get_weights()
            head.set_weights([np.zeros_like(kernel), np.full_like(bias, -30.0)])
            vae.compile(optimizer=keras.optimizers.SGD(1e-4))
        before = [w.copy() for w in vae.decoder.get_weights()]
        data = tf.data.Dataset.from_tensor_slices(images).batch(16)
        history = vae.fit(data, epochs=3, verbose=0, shuffle=False)
        after = vae.decoder.get_weights()
        moved = sum(float(np.square(a - b).sum()) for a, b in zip(after, before))
        return history.history["loss"], moved ** 0.5

    single = run(tf.distribute.get_strategy())
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    double = run(mirrored)
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync,
                      "single": single, "mirrored": double}))
    """
)


@pytest.mark.slow
def test_two_replicas_match_one_device():
    process = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    (single_loss, single_step), (double_loss, double_step) = result["single"], result["mirrored"]
    assert single_loss == pytest.approx(double_loss, rel=1e-4)
    # How far training moved the decoder: summing two replicas' gradients without
    # dividing by the replica count would move it twice as far.
    assert single_step > 0
    assert double_step == pytest.approx(single_step, rel=1e-3)


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief"}}, True),
        (
            {
                "cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                "task": {"type": "worker", "index": 0},
            },
            False,
        ),
    ],
)
def test_only_the_chief_saves(monkeypatch, tmp_path, tf_config, chief):
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.data import load_dataset
    from dogvae.training import train_and_save
    from tests.conftest import write_dogs

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief() is chief
    if chief and tf_config is not None:
        return  # a chief saves like a single process, which the first case trains and sees
    # The whole path a worker takes: it trains on tiny data, and only the chief writes.
    write_dogs(tmp_path / "images", 8)
    data_config = DataConfig(image_size=32)
    dataset = load_dataset(tmp_path / "images", data_config, cache=False)
    model = ModelConfig(image_size=32, conv_filters=(8, 16), dense_units=16, latent_dim=2)
    out_dir = tmp_path / "runs" / "run"
    run_dir, result = train_and_save(
        dataset, model, TrainConfig(epochs=1, batch_size=8), data_config, out_dir
    )
    assert result.status == "finished" and len(result.history) == 1
    assert run_dir == out_dir
    if chief:
        assert (out_dir / "config.json").is_file()
    else:
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), (
            "a worker that is not the chief wrote into the runs folder"
        )


def test_a_lost_worker_is_told_to_restart_every_worker_with_resume():
    from dogvae.training.distribute import lost_worker_message

    message = lost_worker_message(ConnectionResetError("reset by peer"), Path("runs/mw"))
    assert "lost a worker" in message and "ConnectionResetError" in message
    assert "runs/mw" in message and "--resume RUN --strategy multiworker" in message
    assert "\n" not in message  # the CLI prints a message's first line only
