"""The command line: every command, and its bad inputs ending in one clear line."""

import dataclasses
import json
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from dogvae.cli import main
from tests.conftest import run_python


def run_cli(*args, timeout=300):
    """Run ``python -m dogvae`` as a user would; returns (exit code, stdout, stderr)."""
    process = run_python("-m", "dogvae", *args, timeout_s=timeout)
    return process.returncode, process.stdout, process.stderr


def train(data, out, *options, epochs: int = 1, batch_size: int = 8) -> list[str]:
    """The arguments of ``dogvae train`` on ``data`` into ``out``, then ``options``."""
    return [
        "train", str(data), "--out", str(out),
        "--epochs", str(epochs), "--batch-size", str(batch_size), *map(str, options),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run trained for one epoch through the CLI on tiny generated images."""
    from tests.conftest import write_dogs

    folder = tmp_path_factory.mktemp("dogs")
    write_dogs(folder / "images", 24)
    run_dir = folder / "run"
    code = main(train(folder / "images", run_dir, epochs=2))
    assert code == 0
    return run_dir, folder / "images"


def test_help_is_fast_and_does_not_import_tensorflow():
    # ``python -m dogvae --help`` in a fresh process (runpy is what -m runs), asked at
    # exit which modules it imported, wherever in the process the import came from.
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('imported:', 'tensorflow' in sys.modules,"
        " 'keras' in sys.modules))\n"
        "sys.argv = ['dogvae', '--help']\n"
        "runpy.run_module('dogvae', run_name='__main__', alter_sys=True)\n"
    )
    started = time.perf_counter()
    process = run_python("-c", code)
    seconds = time.perf_counter() - started
    assert process.returncode == 0, process.stderr[-2000:]
    assert "train" in process.stdout and "interpolate" in process.stdout
    assert process.stdout.splitlines()[-1] == "imported: False False", "--help imported TensorFlow"
    assert seconds < 10  # generous; a TensorFlow import alone takes ~3 s


def test_train_writes_a_run_and_prints_one_line_per_epoch(trained_run, capsys):
    run_dir, _ = trained_run
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            "encoder.h5",
            "decoder.h5",
            "encoder.keras",
            "decoder.keras",
            "config.json",
            "history.csv",
            "latent_stats.npz",
        ]
    )
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["epochs_completed"] == 2
    assert config["parameters"] == {"encoder": 281_044, "decoder": 104_833}
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3


def test_train_output(tmp_path, image_folder, capsys):
    options = ["--latent-dim", 3, "--limit", 10, "--flip", "--shift", 2, "--lr-schedule", "cosine"]
    code = main(train(image_folder, tmp_path / "r", *options, epochs=2, batch_size=4))
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("data: 8 of 10 images readable (1 not an image, 1 empty)")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == [
        "1/2",
        "2/2",
    ]
    assert "saved" in out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"]["latent_dim"] == 3
    assert saved["train"]["flip"] is True and saved["train"]["lr_schedule"] == "cosine"
    assert saved["train"]["shift"] == 2


def test_report_prints_json_with_every_unreadable_file(dataset_csv, capsys):
    assert main(["report", str(dataset_csv)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "csv" and report["readable"] >= 10
    assert {item["reason"] for item in report["unreadable"]} >= {"missing", "not an image"}


def test_generate_writes_a_grid(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    out = tmp_path / "grid.png"
    assert main(["generate", str(run_dir), "--out", str(out), "--n", "9", "--seed", "3"]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (3 * 64 + 4 * 2, 3 * 64 + 4 * 2)
    again = tmp_path / "again.png"
    main(["generate", str(run_dir), "--out", str(again), "--n", "9", "--seed", "3"])
    assert out.read_bytes() == again.read_bytes()  # same seed, same dogs


def test_generate_writes_raw_samples_as_an_array_or_one_png_each(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    grid = tmp_path / "grid.png"
    assert main(["generate", str(run_dir), "--out", str(grid), "--n", "5", "--seed", "2"]) == 0
    array_file = tmp_path / "samples.npy"
    assert (
        main(["generate", str(run_dir), "--out", str(array_file), "--n", "5", "--seed", "2"]) == 0
    )
    assert f"wrote {array_file}: 5 samples" in capsys.readouterr().out
    samples = np.load(array_file, allow_pickle=False)
    assert samples.shape == (5, 64, 64, 1) and samples.dtype == np.uint8
    # The same dogs as the grid's tiles (row 0: the first three, 2 pixels of padding).
    tiles = np.asarray(Image.open(grid))
    np.testing.assert_array_equal(tiles[2:66, 2:66], samples[0, ..., 0])
    np.testing.assert_array_equal(tiles[2:66, 68:132], samples[1, ..., 0])

    folder = tmp_path / "pngs"
    args = ["generate", str(run_dir), "--n", "5", "--seed", "2", "--scale", "2"]
    assert main([*args, "--out", f"{folder}/"]) == 0
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"sample-{i:04d}.png" for i in range(5)]
    first = np.asarray(Image.open(files[0]))
    assert first.shape == (128, 128)
    np.testing.assert_array_equal(first[::2, ::2], samples[0, ..., 0])
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main([*args, "--n", "2", "--out", str(existing)]) == 0  # no slash: still a folder
    assert len(list(existing.iterdir())) == 2

    assert main([*args, "--out", str(tmp_path / "missing" / "deeper") + "/"]) == 2
    assert "the folder for --out does not exist" in capsys.readouterr().err
    assert main([*args, "--out", str(array_file) + "/"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_export_writes_what_the_browser_decoder_loads(trained_run, tmp_path, capsys):
    from dogvae.export import ONNX_FILE, read_export, run_onnx
    from dogvae.loaded_run import load_run

    run_dir, _ = trained_run
    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = read_export(out)
    run = load_run(run_dir)
    config = run.info.model_config
    assert (info["latent_dim"], info["image_size"], info["channels"]) == (
        config.latent_dim,
        config.image_size,
        config.channels,
    )
    point = np.random.default_rng(0).standard_normal((2, config.latent_dim)).astype(np.float32)
    onnx_images = run_onnx((out / ONNX_FILE).read_bytes(), point)
    np.testing.assert_allclose(onnx_images, run.decode(point), atol=1e-4)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["export", t / "none", "--out", t / "e"], "no such run folder"),
        (lambda t: ["export", t, "--out", t / "e"], "not a dogvae run"),
    ],
)
def test_export_of_a_bad_run_folder_exits_2_in_one_line(tmp_path, capsys, make_args, message):
    assert main([str(arg) for arg in make_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dogvae export: error:") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_export_refuses_a_file_as_its_out_folder(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    (tmp_path / "taken").write_text("keep me")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "taken")]) == 2
    assert "must be a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "keep me"


def test_generate_samples_near_or_like_the_data_or_from_the_prior(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    grids = {}
    described = {
        "near": "the posteriors of training dogs",
        "data": "latent distribution",
        "prior": "the prior N(0, I)",
    }
    for sampler in ("auto", "near", "data", "prior"):
        out = tmp_path / f"{sampler}.png"
        args = ["generate", str(run_dir), "--out", str(out), "--sampler", sampler, "--n", "4"]
        assert main([*args, "--temperature", "0.8"]) == 0
        grids[sampler] = out.read_bytes()
        said = capsys.readouterr().out
        assert described.get(sampler, described["near"]) in said and "temperature 0.8" in said
    assert grids["auto"] == grids["near"]
    assert len({grids["near"], grids["data"], grids["prior"]}) == 3

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "latent_stats.npz").unlink()
    assert main(["generate", str(bare), "--out", str(tmp_path / "b.png"), "--n", "4"]) == 0
    assert "the prior N(0, I)" in capsys.readouterr().out  # auto falls back
    args = ["generate", str(bare), "--out", str(tmp_path / "c.png"), "--sampler", "data"]
    assert main(args) == 2
    assert "this run allows: prior" in capsys.readouterr().err
    args = ["generate", str(run_dir), "--out", str(tmp_path / "d.png"), "--temperature", "9"]
    assert main(args) == 2
    assert "temperature must be from 0 to 2" in capsys.readouterr().err


def test_stats_records_the_training_codes_of_an_older_run(trained_run, tmp_path, capsys):
    from dogvae import runs

    run_dir, images = trained_run
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    stats = runs.read_latent_stats(older)
    before_codes_and_mixture = dataclasses.replace(
        stats,
        point_log_vars=None,
        mixture_weights=None,
        mixture_means=None,
        mixture_scale_tril=None,
    )
    runs.write_latent_stats(older, before_codes_and_mixture)
    out = str(tmp_path / "g.png")
    assert main(["generate", str(older), "--out", out, "--n", "4"]) == 0
    assert "latent distribution" in capsys.readouterr().out  # auto: the best it has
    assert main(["generate", str(older), "--out", out, "--sampler", "near"]) == 2
    said = capsys.readouterr().err
    assert "python -m dogvae stats RUN DATA" in said and "allows: data, prior" in said

    assert main(["stats", str(older), str(images)]) == 0
    assert "latent statistics of" in capsys.readouterr().out
    recorded = runs.read_latent_stats(older)
    trained = runs.read_latent_stats(run_dir)  # what train itself recorded
    for field in dataclasses.fields(trained):
        value = getattr(trained, field.name)
        np.testing.assert_allclose(getattr(recorded, field.name), value, rtol=1e-5, atol=1e-6)
    assert main(["generate", str(older), "--out", out, "--n", "4"]) == 0
    assert "the posteriors of training dogs" in capsys.readouterr().out

    assert main(["stats", str(tmp_path / "nothing"), str(images)]) == 2
    assert "dogvae stats: error" in capsys.readouterr().err
    assert runs.read_latent_stats(older) is not None


def test_fit_sampler_adds_the_mixture_to_an_older_run(trained_run, tmp_path, capsys):
    from dogvae import runs

    run_dir, images = trained_run
    trained = runs.read_latent_stats(run_dir)
    assert trained.mixture_weights is not None  # train fits it where it records the codes
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    without = dataclasses.replace(
        trained, mixture_weights=None, mixture_means=None, mixture_scale_tril=None
    )
    runs.write_latent_stats(older, without)
    out = str(tmp_path / "m.png")
    assert main(["generate", str(older), "--out", out, "--sampler", "mixture"]) == 2
    assert "python -m dogvae fit-sampler RUN DATA" in capsys.readouterr().err

    assert main(["fit-sampler", str(older), str(images)]) == 0
    said = capsys.readouterr().out
    assert "a Gaussian mixture of" in said and "chosen on held-out codes" in said
    fitted = runs.read_latent_stats(older)
    for name in ("mixture_weights", "mixture_means", "mixture_scale_tril"):
        np.testing.assert_allclose(getattr(fitted, name), getattr(trained, name), atol=1e-4)
    np.testing.assert_array_equal(fitted.points, trained.points)  # the rest is kept
    assert main(["generate", str(older), "--out", out, "--sampler", "mixture", "--n", "4"]) == 0
    assert "a Gaussian mixture fitted to the training dogs' codes" in capsys.readouterr().out

    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "latent_stats.npz").unlink()
    assert main(["fit-sampler", str(bare), str(images)]) == 0  # no statistics: all of them
    assert runs.read_latent_stats(bare).mixture_weights is not None
    assert main(["fit-sampler", str(bare), str(images), "--limit", "5"]) == 2
    assert "training images; need 10" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_interpolate_between_random_points(trained_run, tmp_path, suffix):
    run_dir, _ = trained_run
    out = tmp_path / f"walk{suffix}"
    assert main(["interpolate", str(run_dir), "--out", str(out), "--steps", "5"]) == 0
    image = Image.open(out)
    if suffix == ".gif":
        assert image.n_frames == 5
    else:
        assert image.size == (5 * 64 + 6 * 2, 64 + 2 * 2)


def test_interpolate_between_two_images(trained_run, tmp_path):
    run_dir, images = trained_run
    first, second = sorted(images.rglob("*.png"))[:2]
    out = tmp_path / "between.gif"
    assert (
        main(
            [
                "interpolate",
                str(run_dir),
                "--out",
                str(out),
                "--from",
                str(first),
                "--to",
                str(second),
                "--steps",
                "4",
                "--method",
                "linear",
            ]
        )
        == 0
    )
    assert Image.open(out).n_frames == 4


def test_evaluate_prints_mean_losses(trained_run, capsys):
    run_dir, images = trained_run
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), str(images), "--limit", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 10
    assert result["loss"] == pytest.approx(result["reconstruction"] + result["kl"], abs=0.01)
    assert 0 < result["reconstruction"] < 64 * 64 * 1.0
    # Bits per dimension of the 8-bit images, next to the losses.
    assert result["iwae_samples"] == 16
    assert 0 < result["iwae_bpd"] <= result["elbo_bpd"] < 16  # equal to 4 decimals when q is tight
    assert result["elbo_bpd"] == pytest.approx(
        result["reconstruction_bpd"] + result["kl_bpd"], abs=0.01
    )
    assert main(["evaluate", str(run_dir), str(images), "--limit", "4", "--samples", "1"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["iwae_samples"] == 1 and single["iwae_bpd"] == single["elbo_bpd"]
    assert main(["evaluate", str(run_dir), str(images), "--samples", "5000"]) == 2
    assert "samples must be between 1 and 4096" in capsys.readouterr().err


def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["report", t / "nope.csv"], "no such file"),
        (lambda t: ["report", write(t / "x.csv", "path,label\na.png,1\n")], "filepaths"),
        (lambda t: ["report", write(t / "x.csv", "filepaths\nmissing.png\n")], "no readable image"),
        (
            lambda t: ["report", write(t / "x.csv", "filepaths\n../../etc/passwd\n")],
            "outside the allowed folder",
        ),
        (
            lambda t: ["train", write(t / "x.csv", "filepaths\nmissing.png\n"), "--out", t / "r"],
            "no readable image",
        ),
        (lambda t: ["train", t, "--out", t / "r", "--epochs", "0"], "must be at least 1"),
        (lambda t: ["train", t, "--out", t / "r", "--batch-size", "-1"], "must be at least 1"),
        (lambda t: ["train", t, "--out", t / "r", "--epochs", "1000000"], "epochs must be"),
        (lambda t: ["train", t, "--out", t / "r", "--latent-dim", "10000"], "latent_dim"),
        (lambda t: ["train", t, "--out", t / "r", "--learning-rate", "nan"], "learning rate"),
        (lambda t: ["train", t, "--out", t / "r", "--preset", "huge"], "unknown preset"),
        (
            lambda t: [
                "train",
                t,
                "--out",
                t / "r",
                "--strategy",
                "multiworker",
                "--budget-minutes",
                "1",
            ],
            "--budget-minutes cannot be used with --strategy multiworker",
        ),
        (lambda t: ["generate", t, "--out", t / "g.png"], "not a dogvae run"),
        (lambda t: ["generate", t / "none", "--out", t / "g.png"], "no such run folder"),
        (lambda t: ["generate", t, "--out", t / "g.jpg"], "must end in .png"),
        (
            lambda t: ["interpolate", t, "--out", t / "g.gif", "--from", t / "a.png"],
            "both --from and --to",
        ),
        (lambda t: ["evaluate", t, t], "not a dogvae run"),
    ],
)
def test_bad_input_ends_with_one_clear_line(tmp_path, capsys, make_args, message):
    args = [str(arg) for arg in make_args(tmp_path)]
    with pytest.raises(SystemExit) if "must be at least" in message else _no_raise() as ended:
        code = main(args)
        assert code == 2  # the README's exit code for bad input
    if isinstance(ended, pytest.ExceptionInfo):
        assert ended.value.code == 2  # argparse's refusal, the same code
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_training_refuses_to_overwrite_a_folder_that_is_not_a_run(tmp_path, image_folder):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    code, _, err = run_cli("train", image_folder, "--out", target, "--epochs", "1")
    assert code == 2 and "not a dogvae run" in err and len(err.strip().splitlines()) == 1
    assert (target / "notes.txt").read_text() == "keep me"


def test_real_process_bad_input_has_no_traceback(tmp_path):
    csv = write(tmp_path / "x.csv", "filepaths\n/etc/passwd\n")
    code, _, err = run_cli("train", csv, "--out", tmp_path / "r", "--epochs", "1")
    assert code == 2
    assert err.strip().startswith("dogvae train: error: no readable image")
    assert len(err.strip().splitlines()) == 1


def test_train_with_a_mirrored_strategy(tmp_path, image_folder, capsys):
    code = main(train(image_folder, tmp_path / "m", "--strategy", "mirrored", batch_size=4))
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["status"] == "finished"


def test_init_from_continues_training_from_a_run(trained_run, tmp_path, capsys):
    run_dir, images = trained_run
    first = json.loads((run_dir / "config.json").read_text())["final"]["loss"]
    code = main(train(images, tmp_path / "more", "--init-from", run_dir))
    assert code == 0, capsys.readouterr().err
    more = json.loads((tmp_path / "more" / "config.json").read_text())
    continued = more["final"]["loss"]
    assert more["init_from"]["run"] == str(run_dir) and more["init_from"]["epochs_completed"] == 2
    fresh = main(train(images, tmp_path / "fresh"))
    assert fresh == 0
    from_scratch = json.loads((tmp_path / "fresh" / "config.json").read_text())["final"]["loss"]
    assert continued < from_scratch  # it started where the first run ended
    assert continued < first + 50
    capsys.readouterr()
    assert main(train(images, tmp_path / "x", "--init-from", run_dir, "--latent-dim", 7)) == 2
    assert "differs from the run in --init-from" in capsys.readouterr().err


def test_init_from_a_bernoulli_run_with_a_logistic_preset_adds_a_fresh_scale_head(
    trained_run, tmp_path, capsys
):
    """How the default model was made: the quality run's weights, trained on the 8-bit
    likelihood with a scale head of its own."""
    from dogvae.loaded_run import load_run

    run_dir, images = trained_run
    out = tmp_path / "logistic"
    options = ("--preset", "quality-logistic", "--init-from", run_dir, "--learning-rate", 1e-9)
    assert main(train(images, out, *options)) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    start = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == {**start["model"], "likelihood": "logistic"}  # the run's shape
    assert config["init_from"]["run"] == str(run_dir)
    before, after = load_run(run_dir), load_run(out)
    assert after.scale_decoder is not None and before.scale_decoder is None
    for old, new in zip(before.decoder.get_weights(), after.decoder.get_weights(), strict=True):
        np.testing.assert_allclose(new, old, atol=1e-5)  # started from the run, barely moved


def test_the_mean_term_and_weight_reach_the_run_and_a_wrong_term_is_refused(
    trained_run, tmp_path, capsys
):
    _, images = trained_run
    out = tmp_path / "gaussian"
    options = ("--preset", "quality-ar", "--latent-dim", 4, "--mean-term", "gaussian")
    assert main(train(images, out, *options, "--mean-weight", 2.5)) == 0, capsys.readouterr()
    settings = json.loads((out / "config.json").read_text())["train"]
    assert (settings["mean_term"], settings["mean_weight"]) == ("gaussian", 2.5)
    code, _, err = run_cli(*train(images, tmp_path / "bad", "--mean-term", "l2"))
    assert code == 2 and "--mean-term: invalid choice: 'l2'" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_stops_training_after_the_batch_and_saves_it(tmp_path, stop_signal):
    """Ctrl-C, kill, docker stop or a closed terminal: the run so far is saved, not lost,
    and the exit is clean."""
    import signal

    from tests.conftest import read_until, start_python, write_dogs

    write_dogs(tmp_path / "images", 24)
    child = start_python(
        "-m", "dogvae", "train", tmp_path / "images", "--out", tmp_path / "run",
        "--epochs", "10000", "--batch-size", "8",
    )  # fmt: skip
    try:
        read_until(child, "epoch 1/", timeout_s=240)
        child.send_signal(getattr(signal, stop_signal))
        if stop_signal == "SIGHUP":
            # The terminal is gone: nothing reads the output any more, and a write
            # to it fails.
            child.stdout.close()
            child.stderr.close()
            child.wait(timeout=120)
            out = err = ""
        else:
            out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    if stop_signal != "SIGHUP":
        assert "stopping after this batch" in out and "(stopped)" in out, out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["status"] == "stopped" and 1 <= saved["epochs_completed"] < 10000
