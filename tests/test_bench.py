"""The benchmark scripts run on tiny inputs and print valid JSON.

They measure nothing here: these tests only prove that each script works end
to end (the real figures come from running them on ../shared/data).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import save_test_run, write_dogs

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "bench" / "seed_baseline.py"
SCRIPTS = (
    "data.py",
    "train.py",
    "scale.py",
    "latency.py",
    "gap.py",
    "train_in_app.py",
    "checkpoint.py",
    "step_profile.py",
)


def bench(
    script: str, *args: str, cache: Path | None = None, wait_option: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if cache is not None:
        env["DOGVAE_CACHE_DIR"] = str(cache)
    no_wait = ("--no-wait",) if wait_option else ()
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, *no_wait],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )


def json_output(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout[-3000:]
    return json.loads(lines[0])


def settled_csv(folder: Path, count: int) -> Path:
    """A CSV of ``count`` small readable images, old enough for dogvae to cache them."""
    from dogvae.data import limits

    images = write_dogs(folder / "images", count)
    path = folder / "dogs.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepaths", "labels", "data set"])
        for index, image in enumerate(images):
            split = "valid" if index % 8 == 0 else "train"
            writer.writerow([image.relative_to(folder).as_posix(), image.parent.name, split])
    time.sleep(limits.CACHE_SETTLE_SECONDS + 0.2)
    return path


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = bench(script, "--help", wait_option=script != "gap.py")
    assert out.returncode == 0, out.stderr
    assert "JSON" in out.stdout


def test_a_missing_dataset_or_baseline_is_a_clear_message(tmp_path):
    out = bench("data.py", "--csv", str(tmp_path / "nowhere.csv"))
    assert out.returncode == 2
    assert "not found at" in out.stderr and "../shared/data" in out.stderr
    assert "Traceback" not in out.stderr
    csv_path = tmp_path / "dogs.csv"
    csv_path.write_text("filepaths\n")
    out = bench("train.py", "--csv", str(csv_path), "--baseline", str(tmp_path / "none.py"))
    assert out.returncode == 2 and "seed_baseline.py" in out.stderr


def test_checkpoint_bench_skips_cleanly_without_its_dataset(tmp_path):
    out = bench("checkpoint.py", "--csv", str(tmp_path / "nowhere.csv"))
    assert json_output(out) == {"skipped": f"no dataset at {tmp_path / 'nowhere.csv'}"}


def test_checkpoint_bench_times_the_checkpoints_of_a_short_training(tmp_path):
    csv_path = settled_csv(tmp_path, 24)
    result = json_output(bench("checkpoint.py", "--csv", str(csv_path), "--epochs", "2"))
    assert result["checkpoints"] == 2 and result["train_images"] == 21
    assert 0 < result["seconds_per_checkpoint"] < result["epoch_seconds"]
    assert 0 < result["share_of_epoch"] < 1 and result["checkpoint_mb"] > 1


def test_data_bench_on_a_tiny_csv(tmp_path):
    result = json_output(
        bench("data.py", "--csv", str(settled_csv(tmp_path, 12)), "--rounds", "2", "--sample", "4")
    )
    assert result["n"] == 12 and result["readable"] == 12
    assert [r["order"] for r in result["rounds"]] == [
        ["baseline", "dogvae"],
        ["dogvae", "baseline"],
    ]
    assert all(r["cache_hit"] for r in result["rounds"])
    for key in (
        "baseline_img_per_s",
        "dogvae_decode_img_per_s",
        "dogvae_cold_img_per_s",
        "dogvae_cached_img_per_s",
    ):
        assert result[key] > 0
    assert result["decode_speedup"] > 0 and result["cached_speedup_vs_cold"] > 0
    assert set(result["breakdown"]["baseline_ms_per_image"]) == {
        "read",
        "decode",
        "resize",
        "total",
    }
    assert result["pixel_difference"]["reduced_jpeg"]["images"] == 0  # tiny images: never
    assert result["pixel_difference"]["all"]["images"] == 12


@pytest.mark.slow
@pytest.mark.skipif(not BASELINE.exists(), reason="needs ../shared/bench/seed_baseline.py")
def test_train_bench_on_a_tiny_csv(tmp_path):
    csv_path = settled_csv(tmp_path, 48)
    args = ("--csv", str(csv_path), "--n", "48", "--epochs", "2", "--batch", "16", "--rounds", "1")
    result = json_output(bench("train.py", *args, cache=tmp_path / "cache"))
    (round_,) = result["rounds"]
    assert round_["baseline"]["n"] == round_["dogvae"]["n"] == 48
    assert result["ratio"] > 0 and result["gflops"]["dogvae"] > 0
    assert result["flops"]["forward_per_image"] == 69_599_360  # the seed model, by hand
    assert result["cpu"]["cores"] >= 1


@pytest.mark.slow
def test_scale_bench_on_a_few_synthetic_images():
    result = json_output(bench("scale.py", "--n", "300", "--steps", "3", "--batch", "32"))
    assert result["images_loaded"] == 300
    assert result["memory_mapped"] is True
    assert result["batches"] == 3 and result["status"] == "stopped"
    assert result["rss_mb"]["peak_mb"] > 0


@pytest.mark.slow
@pytest.mark.browser
def test_latency_bench_in_a_real_browser(needs_browser):
    out = bench(
        "latency.py",
        *("--presses", "4", "--warmup", "1", "--starts", "1", "--read-seconds", "1"),
        *("--rounds", "1", "--drag-seconds", "1"),
    )
    result = json_output(out)
    canvas = result["browser_decoder"]
    assert canvas["rounds"] == 1
    for kind in ("drag_display_rate", "drag_playwright_moves"):
        dragged = canvas[kind]
        assert dragged["decode"]["n"] > 0 and dragged["input_to_pixels"]["n"] > 0
        assert 0 < dragged["decode"]["p50_ms"] <= dragged["decode"]["p95_ms"] < 60_000
        assert dragged["frames_per_second_median"] > 0
        assert dragged["reruns_during_drag"] == [0]  # values reach the server on release only
    (moves,) = canvas["twenty_moves"]
    assert moves["websocket_bytes_during_moves"] == 0 and moves["websocket_bytes_release_rerun"] > 0
    assert canvas["decoder_requests_per_tab"] == [1]
    assert canvas["title_to_first_canvas_ms"][0] > 0
    slider = result["slider"]
    assert slider["n"] == 4
    # Both ends come from the page's own clock: a redraw takes some time, but not minutes.
    assert 0 < slider["min_ms"] <= slider["p50_ms"] <= slider["p95_ms"] <= slider["max_ms"] < 60_000
    assert set(result["first_page_ms"]) == {"home (Data)", "generate", "one_line_streamlit"}
    assert all(len(times) == 1 and times[0] > 0 for times in result["first_page_ms"].values())
    assert result["first_page_vs_one_line"]["one_line_streamlit"] == 1.0
    assert len(result["dogs_after_home_ms"]) == 1 and result["dogs_after_home_median_ms"] > 0
    assert result["read_seconds"] == 1.0


@pytest.mark.slow
@pytest.mark.browser
def test_train_in_app_bench_trains_and_stops_three_ways(needs_browser):
    out = bench("train_in_app.py", "--images", "40", "--epochs", "1", "--rounds", "1")
    result = json_output(out)
    ways = {"in_process", "app", "app_streamlit_cleanup"}
    assert set(result["rounds"]) == set(result["median"]) == ways
    for rows in result["rounds"].values():
        assert len(rows) == 1
        assert rows[0]["train_seconds"] > 0 and rows[0]["stop_seconds"] > 0
    assert result["train_seconds_vs_in_process"]["in_process"] == 1.0


@pytest.mark.slow
def test_gap_bench_finds_the_gap_of_an_encoder_that_misses(tmp_path):
    """An encoder whose means all sit at (3, -3) wastes 9 nats of KL per image: the
    optimised posteriors must win most of them back."""
    from dogvae.config import ModelConfig
    from dogvae.model import build_vae

    csv_path = settled_csv(tmp_path, 24)
    vae = build_vae(ModelConfig())
    z_mean = vae.encoder.get_layer("z_mean")
    kernel, _ = z_mean.get_weights()
    z_mean.set_weights([np.zeros_like(kernel), np.array([3.0, -3.0], np.float32)])
    save_test_run(tmp_path / "run", vae.encoder, vae.decoder)
    args = (
        str(tmp_path / "run"),
        str(csv_path),
        "--split",
        "all",
        "--steps",
        "40",
        "--learning-rate",
        "0.1",
    )
    result = json_output(bench("gap.py", *args, cache=tmp_path / "cache", wait_option=False))
    assert result["images"] == 24 and result["floor"] > 0
    assert result["gap"] > 5
    assert result["gap"] == pytest.approx(result["amortized_excess"] - result["optimized_excess"])
    assert [point["step"] for point in result["trace"]] == [10, 20, 30, 40]

    out = bench("gap.py", str(tmp_path / "nowhere"), str(csv_path), wait_option=False)
    assert out.returncode == 2 and "run folder not found" in out.stderr


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    sys.path.insert(0, str(REPO / "bench"))
    from sample_quality import frechet_distance

    rng = np.random.default_rng(0)
    first = rng.standard_normal((20_000, 3))
    assert frechet_distance(first, first) == pytest.approx(0.0, abs=1e-6)
    # N(0, I) against N(m, 4 I): |m|^2 + 3 (1 + 4 - 2 * 2) = |m|^2 + 3.
    shifted = 2 * rng.standard_normal((20_000, 3)) + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(first, shifted) == pytest.approx(5.0 + 3.0, rel=0.05)


def test_the_sliced_wasserstein_distance_tells_real_texture_from_blur_and_grain():
    """The second judge of bench/sample_quality.py: patches of a Laplacian pyramid; the
    same kind of images are near, blurred or noisy ones far, at the level it concerns."""
    import cv2

    sys.path.insert(0, str(REPO / "bench"))
    from sample_quality import blurred, laplacian_levels, noisy, patch_descriptors
    from sample_quality import sliced_wasserstein as swd

    def photos(seed: int, n: int = 60):
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=(n, 64, 64)).astype(np.float32)
        smooth = np.stack([cv2.GaussianBlur(image, (0, 0), 1.2) for image in noise])
        scaled = 128 + 255 * smooth / (6 * smooth.std())
        return np.clip(scaled, 0, 255).astype(np.uint8)[..., None]

    levels = laplacian_levels(photos(0, 2))
    assert [level.shape[1:] for level in levels] == [(64, 64), (32, 32), (16, 16)]
    rng = np.random.default_rng(9)
    reference = patch_descriptors(photos(0), rng)
    same = swd(patch_descriptors(photos(1), rng), reference, rng)
    blur = swd(patch_descriptors(blurred(photos(1), 1.5), rng), reference, rng)
    grain = swd(patch_descriptors(noisy(photos(1), 20.0, rng), rng), reference, rng)
    assert same["swd"] < blur["swd"] and same["swd"] < grain["swd"]
    assert blur["swd_levels"][0] > 3 * same["swd_levels"][0]  # the finest band lost
    assert grain["swd_levels"][0] > 2 * same["swd_levels"][0]  # the finest band changed


def test_sample_quality_bench_calibrates_and_judges_every_sampler(tmp_path):
    from dogvae.config import ModelConfig
    from dogvae.latent import latent_statistics
    from dogvae.mixture import with_mixture
    from dogvae.model import build_vae

    csv_path = settled_csv(tmp_path, 24)
    vae = build_vae(ModelConfig())
    codes = np.random.default_rng(0).standard_normal((40, 2))
    stats = with_mixture(latent_statistics(codes, np.zeros_like(codes)), codes)
    save_test_run(tmp_path / "run", vae.encoder, vae.decoder, latent_stats=stats)
    cache = tmp_path / "features.weights.h5"
    args = (str(tmp_path / "run"), "--data", str(csv_path), "--n", "8", "--epochs", "1")
    result = json_output(
        bench("sample_quality.py", *args, "--cache", str(cache), wait_option=False)
    )
    assert result["feature_network"]["trained"] is True and cache.exists()
    assert result["feature_network"]["kind"] == "simclr"  # the default
    assert 0 <= result["feature_network"]["validation_view_retrieval"] <= 1
    verdict = result["calibration_verdict"]
    assert set(verdict["checks"]) == {
        "real < blurred 1 px",
        "blurred 1 px < blurred 2 px",
        "blurred 1 px < scrambled",
        "real < scrambled / 10",
        "real < noisy",
        "SWD: real < blurred 1 px < blurred 2 px",
        "SWD: real < noisy",
    }
    assert verdict["passed"] == all(verdict["checks"].values())
    calibration = result["calibration"]
    assert calibration["real validation photos"]["fd"] >= 0
    assert set(calibration) >= {"blurred, sigma 2 px", "scrambled 8x8 patches (not a dog)"}
    (row,) = result["runs"]
    assert set(row) == {
        "run",
        "reconstructions of the validation photos",
        "near",
        "mixture",
        "data",
        "prior",
    }
    assert all(row[name]["nearest_train_rms_median"] > 0 for name in ("near", "prior"))
    assert all(
        row[name]["swd"] > 0 and len(row[name]["swd_levels"]) == 3 for name in row if name != "run"
    )
    again = json_output(bench("sample_quality.py", *args, "--cache", str(cache), wait_option=False))
    assert again["feature_network"]["trained"] is False  # the cached weights
    assert again["runs"] == result["runs"]


def test_the_train_bench_counts_any_preset_from_its_layers():
    """The generic count gives the seed's hand count, counts a shared trunk once and
    puts a transposed convolution at its input pixels."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import train as train_bench
    finally:
        sys.path.remove(str(REPO / "bench"))
    from dogvae.config import PRESETS
    from dogvae.model import build_vae

    seed = build_vae(PRESETS["seed"].model)
    assert train_bench.model_flops(seed.parts)["forward_per_image"] == 69_599_360
    ar = build_vae(PRESETS["quality-ar"].model)
    counted = train_bench.model_flops((ar.encoder, ar.decoder, ar.scale_decoder))
    plain = train_bench.model_flops((ar.encoder, ar.decoder))
    head = counted["layers"]["decoder_scale log_scale_raw"]
    assert head == 9 * 32 * 1 * 64 * 64 * 2  # the head's 3x3 convolution, once
    assert counted["forward_per_image"] == plain["forward_per_image"] + head
    assert counted["layers"]["decoder deconv_4"] == 9 * 64 * 32 * 32 * 32 * 2
    assert counted["train_per_image"] == 3 * counted["forward_per_image"]


def test_the_step_profile_times_every_part_of_a_training_step():
    """bench/step_profile.py: every layer (the shared trunk once), the heads joined as a
    step runs them, the loss, Adam and the whole step, with shares that add up."""
    result = json_output(
        bench("step_profile.py", "--preset", "quality-ar", "--batch", "2", "--repeats", "1")
    )
    names = [part["part"] for part in result["parts"]]
    assert len(names) == len(set(names))
    for name in ("decoder deconv_4", "encoder conv_1_bn", "loss and its gradients"):
        assert name in names
    assert any("joined" in name for name in names) and "Adam's update" in names
    counted = [part for part in result["parts"] if not part.get("alone")]
    assert sum(part["share"] for part in counted) == pytest.approx(1.0, abs=0.01)
    assert {part["part"] for part in result["parts"] if part.get("alone")} == {
        "decoder image",
        "decoder_scale log_scale_raw",
    }
    assert result["step_ms"] > 0 and result["train_mflop_per_image"] > 300
    assert result["cpu"]["gemm_gflops"] > 0
