"""Hostile or broken input and faults: clear messages, nothing the user had is lost."""

import io
import json
import signal
import subprocess
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from dogvae.config import DataConfig, ModelConfig, TrainConfig
from dogvae.data import decode_image, load_dataset
from tests.conftest import read_until, run_python, start_python


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def test_truncated_jpeg_is_not_an_image():
    data = jpeg_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    )
    with pytest.raises(ValueError, match=r"^not an image"):
        decode_image(data[: len(data) // 2])


def test_cmyk_jpeg_decodes_to_rgb():
    pixel = decode_image(jpeg_bytes(Image.new("CMYK", (30, 20), (0, 128, 255, 0))), 64, 3)[0, 0]
    assert pixel[0] > 200 and 100 < pixel[1] < 160 and pixel[2] < 40  # orange, in RGB order


def test_one_pixel_image_is_scaled_up():
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 200).save(buffer, "PNG")
    image = decode_image(buffer.getvalue())
    assert image.shape == (64, 64, 1) and (image == 200).all()


def huge_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height black pixels, compressed without ever
    holding the raw image in memory (one zero row, repeated, streamed through zlib)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_a_20000_pixel_square_image_is_refused_without_allocating_it(tmp_path):
    """OpenCV's pixel limit must be set before cv2 is imported: check in a fresh process
    that decoding never allocates the 400 MB the image would need."""
    path = tmp_path / "huge.png"
    path.write_bytes(huge_png(20_000, 20_000))
    # VmHWM, the peak of this process's own memory map: ru_maxrss would include the
    # parent's peak (Linux keeps it across fork and exec), and pytest's is large.
    script = textwrap.dedent(f"""
        import json
        from dogvae.config import DataConfig
        from dogvae.data import load_dataset
        dataset = load_dataset({str(tmp_path)!r}, DataConfig())
        item = dataset.report.unreadable[0]
        status = open("/proc/self/status").read()
        peak_kb = int(status.split("VmHWM:")[1].split()[0])
        print(json.dumps({{"reason": item.reason, "detail": item.detail,
                           "rss_mb": peak_kb / 1024}}))
    """)
    out = run_python("-c", script, timeout_s=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["reason"] == "too large" and result["detail"] == "400,000,000 pixels"
    assert result["rss_mb"] < 300, result


def test_a_csv_listing_100000_missing_files_is_reported_not_read(tmp_path):
    lines = ["filepaths"] + [f"gone/dog_{index}.jpg" for index in range(100_000)]
    (tmp_path / "many.csv").write_text("\n".join(lines))
    dataset = load_dataset(tmp_path / "many.csv", DataConfig())
    assert dataset.report.rows == 100_000 and dataset.report.readable == 0
    assert dataset.report.reasons() == {"missing": 100_000}
    with pytest.raises(ValueError, match=r"no readable image.*100,000 missing"):
        dataset.require_images()


def test_two_trainings_at_once_both_finish_and_a_third_is_refused(tmp_path):
    from dogvae.training import TrainingJob, TrainingSlots
    from tests.conftest import make_dataset
    from tests.training_helpers import TINY, blobs

    slots = TrainingSlots(2)

    def job(name, epochs):
        return TrainingJob(
            dataset=make_dataset(blobs(24), validation=4),
            model_config=TINY,
            train_config=TrainConfig(epochs=epochs, batch_size=8),
            data_config=DataConfig(image_size=32),
            out_dir=tmp_path / name,
            slots=slots,
        )

    first, second = job("a", 3).start(), job("b", 3).start()
    with pytest.raises(RuntimeError, match="already running"):
        job("c", 1).start()
    assert first.wait(120) and second.wait(120)
    assert first.status == second.status == "finished", (first.message, second.message)
    assert slots.running == 0
    for name in ("a", "b"):
        assert (tmp_path / name / "encoder.keras").is_file()


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from dogvae import runs
    from dogvae.config import DataConfig, ModelConfig, TrainConfig
    from dogvae.model import build_decoder, build_encoder

    where = sys.argv[2]
    real_rename, real_write = os.rename, runs._write_text
    def pause(*args):
        print("PAUSED", flush=True)
        time.sleep(600)
    if where == "writing":
        runs._write_text = lambda *a: pause()
    else:
        calls = []
        def rename(src, dst):
            real_rename(src, dst)
            calls.append(dst)
            if len(calls) == 1:
                pause()
        runs.os.rename = rename
    config = ModelConfig()
    runs.save_run(sys.argv[1], build_encoder(config), build_decoder(config),
                  model_config=config, train_config=TrainConfig(epochs=1),
                  data_config=DataConfig(), data={}, history=[])
""")


@pytest.mark.parametrize("where", ["writing", "between renames"])
def test_a_process_killed_while_saving_leaves_the_previous_run_intact(tmp_path, where):
    from dogvae import runs
    from dogvae.model import build_decoder, build_encoder

    config = ModelConfig()
    encoder = build_encoder(config)
    runs.save_run(
        tmp_path / "run",
        encoder,
        build_decoder(config),
        model_config=config,
        train_config=TrainConfig(epochs=1),
        data_config=DataConfig(),
        data={},
        history=[],
    )
    before = encoder.get_weights()[0]
    child = start_python("-c", KILL_SCRIPT, tmp_path / "run", where, stderr=subprocess.DEVNULL)
    try:
        read_until(child, "PAUSED", timeout_s=120)  # the save reached the point to kill it
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    found, problems = runs.list_runs(tmp_path)  # repairs an interrupted swap
    assert [info.name for info in found] == ["run"] and not problems
    from dogvae.loaded_run import load_run

    loaded = load_run(tmp_path / "run")
    np.testing.assert_array_equal(loaded.encoder.get_weights()[0], before)


def test_disk_full_while_saving_keeps_the_old_run_and_says_why(tmp_path, monkeypatch):
    """A TrainingJob whose save fails: status failed, a clear message, the old run untouched."""
    import errno

    from dogvae import runs
    from dogvae.training import TrainingJob
    from tests.conftest import make_dataset
    from tests.training_helpers import TINY, blobs

    def job():
        return TrainingJob(
            dataset=make_dataset(blobs(16), validation=4),
            model_config=TINY,
            train_config=TrainConfig(epochs=1, batch_size=8),
            data_config=DataConfig(image_size=32),
            out_dir=tmp_path / "run",
        )

    first = job().start()
    first.wait(120)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "_write_text", full)
    second = job().start()
    second.wait(120)
    assert second.status == "failed"
    assert "could not save the run" in second.message and "No space left" in second.message
    # The old run's files are untouched; the new training is not lost either: its
    # checkpoint stays beside them, for `train --resume` once there is space.
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert after.pop("checkpoint.npz", None) is not None
    assert after == before
