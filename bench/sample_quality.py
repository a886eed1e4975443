"""Sample quality: a Fréchet distance in the features of a small network trained on the photos.

    nice python bench/sample_quality.py models/default
    python bench/sample_quality.py RUN [RUN ...] --data ../shared/data/dogs_large.csv --n 1000

No pretrained network can be downloaded here and the shared photos hold no cats
(their ``labels`` are empty or a dog's breed), so the feature network is a small CNN
trained on the training photos without labels. ``--features simclr`` (the default):
contrastive, as SimCLR (Chen et al. 2020): two random crops of a photo (with flips and
changes of brightness and contrast, never a blur) must map near each other and away
from the other photos of the batch, so the features keep what tells one dog photo from
another. ``--features rotation``: trained to tell how far a photo was rotated (0, 90,
180 or 270 degrees; Gidaris et al. 2018), the earlier measure, which failed its
calibration. The weights are cached (``--cache``, default bench/.cache/, not in git)
and trained again only when absent. The Fréchet distance (FD, as FID: Heusel et al. 2017) compares
the Gaussian of ``--n`` images' features with the training photos'.

Calibration first, since a measure is only trusted when it orders known cases: held-out
real photos (small FD), the same photos blurred (larger) and scrambled in 8x8 patches
(the stand-in for "not a dog", larger still). Then, for every run and every sampler it
allows, FD of ``--n`` samples and their distance to the nearest training photo (RMS on
a 0..1 scale, ``dogvae.images.nearest_images``, the memorisation check): a sampler
whose samples sit nearer the training photos than held-out photos do is copying.

A second judge needs no network: the sliced Wasserstein distance (SWD, Karras et al.
2018) between 7x7 patches of the images' Laplacian pyramids (64, 32 and 16 pixels) and
those of training photos, each level's patches normalised by their own spread: it
weighs texture and sharpness scale by scale (blur and grain both move its finest level)
but not what the picture shows (scrambled patches keep their texture), which is the
FD's part.

One JSON object on stdout; nothing here is timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
REFERENCE_IMAGES = 5000  # training photos whose features are the reference Gaussian
PATCH = 8  # side of the squares a scrambled photo is cut into
# The sliced Wasserstein distance of patches (Karras et al. 2018, Progressive GANs): a
# second judge that needs no network, of texture and sharpness at each scale.
SWD_PATCH = 7  # side of a patch
SWD_PATCHES_PER_IMAGE = 64
SWD_DIRECTIONS = 512
SWD_COARSEST = 16  # the pyramid goes down to 16x16


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fréchet distance of runs' samples (every sampler) in the features of a "
        "small CNN trained on the photos, calibrated on real, blurred and scrambled photos; "
        "and the samples' distance to their nearest training photo. Prints JSON.",
    )
    parser.add_argument("runs", type=Path, nargs="*", help="dogvae run folders")
    parser.add_argument(
        "--data", type=Path, default=common.SHARED_DATA / "dogs_large.csv", help="the photos"
    )
    parser.add_argument("--n", type=int, default=1000, help="images per FD (default 1000)")
    parser.add_argument(
        "--features",
        choices=("simclr", "rotation"),
        default="simclr",
        help="how the feature CNN is trained (default simclr)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="feature weights (default bench/.cache/FEATURES_features.weights.h5)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs if trained (simclr 30, rotation 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument(
        "--pixel-temperatures",
        default="0.3,0.6,1.0",
        help="for runs with a discretised logistic, also judge every sampler with its "
        "pixels drawn at these temperatures (comma-separated; default 0.3,0.6,1.0)",
    )
    return parser.parse_args(argv)


def frechet_distance(first, second) -> float:
    """FD between Gaussians fitted to two feature sets ``(n, d)``, NumPy only:
    ``|m1 - m2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``."""
    import numpy as np

    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    mean_gap = np.sum((first.mean(0) - second.mean(0)) ** 2)
    cov_first, cov_second = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    values, vectors = np.linalg.eigh(cov_first)
    root_first = (vectors * np.sqrt(np.maximum(values, 0))) @ vectors.T
    middle = np.linalg.eigvalsh(root_first @ cov_second @ root_first)
    cross = np.sum(np.sqrt(np.maximum(middle, 0)))
    return float(mean_gap + np.trace(cov_first) + np.trace(cov_second) - 2 * cross)


def feature_network(image_shape: tuple[int, int, int]):
    """A small CNN: four stride-2 convolutions, average pooling, 128 features, 4 rotations."""
    import keras
    from keras import layers

    inputs = keras.Input(image_shape)
    x = inputs
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(128, activation="relu", name="features")(x)
    outputs = layers.Dense(4, name="rotation")(features)
    return keras.Model(inputs, outputs), keras.Model(inputs, features)


def contrastive_network(image_shape: tuple[int, int, int]):
    """The SimCLR backbone (3x3 convolutions 32, 64-64, 128-128, 256, batch-normalised,
    ReLU; average pooling: 256 features) and its projection head (256 -> 128)."""
    import keras
    from keras import layers

    inputs = keras.Input(image_shape)
    x = inputs
    for filters, strides in ((32, 2), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    backbone = keras.Model(inputs, features)
    head = keras.Sequential(
        [keras.Input((256,)), layers.Dense(256, activation="relu"), layers.Dense(128)]
    )
    return backbone, head


def augmented(images, generator):
    """SimCLR's views of a float batch (n, H, W, C) in [0, 1]: a random crop of 35-100% of
    the area (aspect 3/4 to 4/3) resized back, a random flip, brightness and contrast."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    size = tf.shape(images)[1:3]
    area = generator.uniform([n], 0.35, 1.0)
    aspect = tf.exp(generator.uniform([n], tf.math.log(0.75), tf.math.log(4 / 3)))
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = generator.uniform([n]) * (1.0 - height)
    left = generator.uniform([n]) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    views = tf.image.crop_and_resize(images, boxes, tf.range(n), size)
    flip = generator.uniform([n, 1, 1, 1]) < 0.5
    views = tf.where(flip, tf.reverse(views, axis=[2]), views)
    mean = tf.reduce_mean(views, axis=[1, 2, 3], keepdims=True)
    contrast = generator.uniform([n, 1, 1, 1], 0.6, 1.4)
    brightness = generator.uniform([n, 1, 1, 1], -0.2, 0.2)
    return tf.clip_by_value((views - mean) * contrast + mean + brightness, 0.0, 1.0)


def train_contrastive(train, epochs: int, batch: int = 256, temperature: float = 0.2):
    """SimCLR's NT-Xent training of ``contrastive_network`` on uint8 ``train``."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    backbone, head = contrastive_network(train.shape[1:])
    weights = backbone.trainable_variables + head.trainable_variables
    steps = epochs * (len(train) // batch)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps)
    optimizer = keras.optimizers.Adam(schedule)
    generator = tf.random.Generator.from_seed(0)

    @tf.function
    def step(images):
        both = tf.concat([augmented(images, generator), augmented(images, generator)], 0)
        with tf.GradientTape() as tape:
            projected = tf.math.l2_normalize(head(backbone(both, training=True)), axis=1)
            similarity = tf.matmul(projected, projected, transpose_b=True) / temperature
            count = tf.shape(images)[0]
            similarity -= 1e9 * tf.eye(2 * count)  # not itself
            partner = tf.concat([tf.range(count, 2 * count), tf.range(count)], 0)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(partner, similarity)
            )
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
        return loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(train))
        epoch = [
            float(step(tf.constant(train[order[i : i + batch]], tf.float32) / 255.0))
            for i in range(0, len(train) - batch + 1, batch)
        ]
        losses.append(round(float(np.mean(epoch)), 4))
    return backbone, losses


def contrastive_features(train, validation, cache: Path, epochs: int) -> tuple[object, dict]:
    """The SimCLR backbone, trained unless ``cache`` holds its weights; its report says
    how often a held-out photo's second view is its own first view's nearest neighbour."""
    import numpy as np
    import tensorflow as tf

    report = {"kind": "simclr", "cache": str(cache)}
    if cache.exists():
        backbone, _ = contrastive_network(train.shape[1:])
        backbone.load_weights(cache)
        report["trained"] = False
    else:
        started = time.perf_counter()
        backbone, losses = train_contrastive(train, epochs, batch=min(256, len(train)))
        cache.parent.mkdir(parents=True, exist_ok=True)
        backbone.save_weights(cache)
        report.update(
            trained=True, epochs=epochs, seconds=round(time.perf_counter() - started), losses=losses
        )
    generator = tf.random.Generator.from_seed(1)
    pixels = tf.constant(validation[:500], tf.float32) / 255.0
    first, second = (
        tf.math.l2_normalize(backbone(augmented(pixels, generator)), axis=1) for _ in range(2)
    )
    nearest = np.argmax(np.asarray(tf.matmul(first, second, transpose_b=True)), axis=1)
    hits = nearest == np.arange(len(pixels))
    report["validation_view_retrieval"] = round(float(np.mean(hits)), 3)
    return backbone, report


def rotations(images, rng):
    """Each image turned by a random multiple of 90 degrees, and the multiple."""
    import numpy as np

    turns = rng.integers(0, 4, len(images))
    turned = np.stack([np.rot90(image, k) for image, k in zip(images, turns, strict=True)])
    return turned, turns


def train_features(train, validation, cache: Path, epochs: int) -> tuple[object, dict]:
    """The feature model, trained on rotations of ``train`` unless ``cache`` holds its weights."""
    import keras
    import numpy as np

    classifier, features = feature_network(train.shape[1:])
    report = {"kind": "rotation", "cache": str(cache)}
    if cache.exists():
        classifier.load_weights(cache)
        report["trained"] = False
    else:
        keras.utils.set_random_seed(0)
        classifier.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        for _ in range(epochs):  # fresh rotations every epoch
            turned, turns = rotations(train, rng)
            classifier.fit(turned.astype(np.float32) / 255, turns, batch_size=64, verbose=0)
        cache.parent.mkdir(parents=True, exist_ok=True)
        classifier.save_weights(cache)
        report.update(trained=True, epochs=epochs, seconds=round(time.perf_counter() - started))
    turned, turns = rotations(validation, np.random.default_rng(1))
    logits = classifier.predict(turned.astype(np.float32) / 255, batch_size=256, verbose=0)
    report["validation_rotation_accuracy"] = round(float(np.mean(logits.argmax(1) == turns)), 3)
    return features, report


def laplacian_levels(images) -> list:
    """The Laplacian pyramid of uint8 grey images (n, H, W, 1), float32, finest band first,
    down to 16x16, whose Gaussian level ends the list (as in Karras et al. 2018)."""
    import cv2
    import numpy as np

    current = images[..., 0].astype(np.float32) / 255.0
    levels = []
    while current.shape[1] > SWD_COARSEST:
        smaller = np.stack([cv2.pyrDown(image) for image in current])
        expanded = np.stack(
            [cv2.pyrUp(image, dstsize=(current.shape[2], current.shape[1])) for image in smaller]
        )
        levels.append(current - expanded)
        current = smaller
    levels.append(current)
    return levels


def patch_descriptors(images, rng) -> list:
    """SWD_PATCHES_PER_IMAGE random SWD_PATCH x SWD_PATCH neighbourhoods of every image at
    every pyramid level, each level's set normalised by its own mean and deviation."""
    import numpy as np

    descriptors = []
    for level in laplacian_levels(images):
        n, height, width = level.shape
        count = SWD_PATCHES_PER_IMAGE
        rows = rng.integers(0, height - SWD_PATCH + 1, (n, count))
        cols = rng.integers(0, width - SWD_PATCH + 1, (n, count))
        offsets = np.arange(SWD_PATCH)
        patches = level[
            np.arange(n)[:, None, None, None],
            rows[:, :, None, None] + offsets[None, None, :, None],
            cols[:, :, None, None] + offsets[None, None, None, :],
        ].reshape(n * count, SWD_PATCH * SWD_PATCH)
        patches = (patches - patches.mean()) / max(float(patches.std()), 1e-8)
        descriptors.append(patches)
    return descriptors


def sliced_wasserstein(first: list, second: list, rng) -> dict:
    """Sliced Wasserstein distance between two images' patch descriptors, level by level
    (SWD, Karras et al. 2018: random unit directions, sorted projections), x 1000."""
    import numpy as np

    distances = []
    for ours, theirs in zip(first, second, strict=True):
        count = min(len(ours), len(theirs))
        ours = ours[rng.permutation(len(ours))[:count]]
        theirs = theirs[rng.permutation(len(theirs))[:count]]
        directions = rng.normal(size=(ours.shape[1], SWD_DIRECTIONS))
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        projected = np.sort(ours @ directions, axis=0), np.sort(theirs @ directions, axis=0)
        distances.append(float(np.mean(np.abs(projected[0] - projected[1]))) * 1000)
    levels = [round(distance, 2) for distance in distances]
    return {"swd": round(float(np.mean(distances)), 2), "swd_levels": levels}


def blurred(images, sigma: float):
    import cv2
    import numpy as np

    return np.stack(
        [cv2.GaussianBlur(image, (0, 0), sigma).reshape(image.shape) for image in images]
    )


def noisy(images, sigma: float, rng):
    """Independent Gaussian noise of ``sigma`` grey levels on every pixel: the control for
    samples whose pixels are drawn (grain alone must not pass for a real photo)."""
    import numpy as np

    return np.clip(np.rint(images + rng.normal(0, sigma, images.shape)), 0, 255).astype(np.uint8)


def scrambled(images, rng):
    """Each image cut into PATCH x PATCH squares put back in a random order."""
    import numpy as np

    n, height, width, channels = images.shape
    rows, cols = height // PATCH, width // PATCH
    patches = images.reshape(n, rows, PATCH, cols, PATCH, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, rows * cols, PATCH, PATCH, channels)
    shuffled = np.stack([patch[rng.permutation(rows * cols)] for patch in patches])
    shuffled = shuffled.reshape(n, rows, cols, PATCH, PATCH, channels).transpose(0, 1, 3, 2, 4, 5)
    return shuffled.reshape(images.shape)


def main(argv=None) -> int:
    args = parse_args(argv)
    common.require(args.data, "the photos")
    for run in args.runs:
        common.require(run / "config.json", "the run folder")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from dogvae import images as image_tools
    from dogvae import samplers
    from dogvae.config import DataConfig
    from dogvae.data import load_dataset
    from dogvae.loaded_run import load_run
    from dogvae.runs import read_latent_stats

    dataset = load_dataset(args.data, DataConfig()).require_images()
    train = np.asarray(dataset.split_images("train"))
    validation = np.asarray(dataset.split_images("validation"))
    cache = args.cache or CACHE_DIR / f"{args.features}_features.weights.h5"
    if args.features == "simclr":
        features, network = contrastive_features(train, validation, cache, args.epochs or 30)
    else:
        features, network = train_features(train, validation, cache, args.epochs or 4)

    def embed(batch):
        pixels = image_tools.to_uint8(np.asarray(batch)).astype(np.float32) / 255
        return features.predict(pixels, batch_size=256, verbose=0)

    rng = np.random.default_rng(args.seed)
    reference_photos = train[rng.permutation(len(train))[:REFERENCE_IMAGES]]
    reference = embed(reference_photos)
    held_out = validation[: args.n]
    reference_patches = patch_descriptors(reference_photos[: args.n], np.random.default_rng(1))

    def judged(batch) -> dict:
        _, distances = image_tools.nearest_images(batch, train)
        pixels = image_tools.to_uint8(np.asarray(batch))
        patches = patch_descriptors(pixels, np.random.default_rng(2))
        return {
            "fd": round(frechet_distance(embed(batch), reference), 3),
            **sliced_wasserstein(patches, reference_patches, np.random.default_rng(3)),
            "nearest_train_rms_median": round(float(np.median(distances)), 4),
            "nearest_train_rms_mean": round(float(np.mean(distances)), 4),
        }

    calibration = {
        "real validation photos": judged(held_out),
        "blurred, sigma 1 px": judged(blurred(held_out, 1.0)),
        "blurred, sigma 2 px": judged(blurred(held_out, 2.0)),
        "scrambled 8x8 patches (not a dog)": judged(scrambled(held_out, rng)),
        "noise, sigma 8 levels": judged(noisy(held_out, 8.0, rng)),
        "blurred 2 px, then noise 8 levels": judged(noisy(blurred(held_out, 2.0), 8.0, rng)),
    }
    fd = {name: figures["fd"] for name, figures in calibration.items()}
    real = fd["real validation photos"]
    checks = {
        "real < blurred 1 px": real < fd["blurred, sigma 1 px"],
        "blurred 1 px < blurred 2 px": fd["blurred, sigma 1 px"] < fd["blurred, sigma 2 px"],
        "blurred 1 px < scrambled": fd["blurred, sigma 1 px"]
        < fd["scrambled 8x8 patches (not a dog)"],
        "real < scrambled / 10": real < fd["scrambled 8x8 patches (not a dog)"] / 10,
        "real < noisy": real < fd["noise, sigma 8 levels"],
    }
    swd = {name: figures["swd"] for name, figures in calibration.items()}
    checks.update(
        {
            "SWD: real < blurred 1 px < blurred 2 px": swd["real validation photos"]
            < swd["blurred, sigma 1 px"]
            < swd["blurred, sigma 2 px"],
            "SWD: real < noisy": swd["real validation photos"] < swd["noise, sigma 8 levels"],
        }
    )
    calibration_verdict = {"checks": checks, "passed": all(checks.values())}
    temperatures = [float(value) for value in args.pixel_temperatures.split(",") if value]
    results = []
    for run_dir in args.runs:
        run = load_run(run_dir)
        config = run.info.model_config
        if (config.image_size, config.channels) != (held_out.shape[1], held_out.shape[3]):
            results.append(
                {
                    "run": str(run_dir),
                    "skipped": "its images are not those of --data (64x64 grayscale)",
                }
            )
            continue
        stats = read_latent_stats(run_dir)
        row = {
            "run": str(run_dir),
            "reconstructions of the validation photos": judged(run.decode(run.encode(held_out)[0])),
        }
        for name in samplers.samplers_for(stats):
            z, _ = samplers.draw_latents(
                args.n, run.info.model_config.latent_dim, stats, name, args.seed
            )
            row[name] = judged(run.decode(z))
            if run.draws_pixels:
                for temperature in temperatures:
                    drawn = run.sample_images(z, temperature, args.seed)
                    row[f"{name}, pixels drawn at {temperature:g}"] = judged(drawn)
        results.append(row)
    common.emit(
        {
            "data": str(args.data),
            "images_per_fd": len(held_out),
            "reference_train_photos": len(reference),
            "feature_network": network,
            "calibration": calibration,
            "calibration_verdict": calibration_verdict,
            "runs": results,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
