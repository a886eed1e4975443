"""Start a "logistic-ar" run from a logistic one, its neighbour weights fitted first.

Trained from a start at zero, the 12 neighbour weights of the "logistic-ar" likelihood
move by about one learning rate per step, so a short fine-tune would spend most of its
steps getting there. This fits them in closed form instead: with z = z_mean on training
photos, the least-squares weights that predict each pixel's error (x/255 - mean) from
its neighbours' errors, and then the one shift of the log-scale bias that maximises the
likelihood under those weights. The result is a complete run, for
``python -m dogvae train DATA --preset quality-ar --init-from OUT``.

    python scripts/fit_neighbours.py models/default ../shared/data/dogs_large.csv \
        --out runs/qar-start --images 1000
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from dogvae.data import load_dataset
from dogvae.likelihood import NEIGHBOURS, autoregressive_logistic_log_prob, neighbour_errors
from dogvae.loaded_run import load_run
from dogvae.model import (
    build_vae,
    decode,
    encode,
    neighbour_kernel,
    scale_head_weights,
    set_scale_head_weights,
)
from dogvae.runs import read_history, save_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a logistic run (e.g. models/default)")
    parser.add_argument("data", help="its training data (CSV, ZIP or folder)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--images", type=int, default=1000, help="training photos to fit on")
    args = parser.parse_args()

    start = load_run(args.run)
    if start.scale_decoder is None:
        raise SystemExit(f"{args.run} has no scale head: train a logistic run first")
    info = start.info
    images = load_dataset(args.data, replace(info.data_config, limit=None)).require_images()
    train = images.split_images("train")[: args.images]
    z_mean, _ = encode(start.encoder, train)
    means = decode(start.decoder, z_mean).astype(np.float64)
    log_scales = decode(start.scale_decoder, z_mean).astype(np.float64)
    errors = train.astype(np.float64) / 255.0 - means
    features = neighbour_errors(errors)
    channels = errors.shape[-1]
    kernel = np.stack(
        [
            np.linalg.lstsq(
                features[..., c, :].reshape(-1, len(NEIGHBOURS)),
                errors[..., c].reshape(-1),
                rcond=None,
            )[0]
            for c in range(channels)
        ],
        axis=-1,
    )
    log_prob = autoregressive_logistic_log_prob(NEIGHBOURS, kernel)
    dims = int(np.prod(train.shape[1:]))
    shifts = np.arange(-1.5, 0.51, 0.1)
    bpd = [
        -log_prob((means, np.clip(log_scales + s, -7.0, 0.0)), train).mean() / dims / np.log(2)
        for s in shifts
    ]
    best = float(shifts[int(np.argmin(bpd))])

    model_config = replace(info.model_config, likelihood="logistic-ar")
    vae = build_vae(model_config)
    vae.encoder.set_weights(start.encoder.get_weights())
    vae.decoder.set_weights(start.decoder.get_weights())
    set_scale_head_weights(vae.scale_decoder, scale_head_weights(start.scale_decoder))
    raw = vae.scale_decoder.get_layer("log_scale_raw")
    weights = raw.get_weights()
    weights[-1] = weights[-1] + best
    raw.set_weights(weights)
    neighbour_kernel(vae.scale_decoder).assign(kernel.astype(np.float32))
    save_run(
        args.out,
        vae.encoder,
        vae.decoder,
        model_config=model_config,
        train_config=info.train_config,
        data_config=info.data_config,
        data=info.config.get("data", {}),
        history=read_history(info.path),
        message=f"neighbour weights fitted on {len(train)} training photos of {args.data}",
        preset="quality-ar",
        init_from={"run": str(info.path), "fit": "least squares, log-scale shift"},
        scale_decoder=vae.scale_decoder,
    )
    print(
        json.dumps(
            {
                "out": args.out,
                "images": len(train),
                "kernel": np.round(kernel[:, 0], 4).tolist(),
                "log_scale_shift": round(best, 2),
                "train_bpd_unshifted": round(float(bpd[int(np.argmin(np.abs(shifts)))]), 4),
                "train_bpd_after": round(float(min(bpd)), 4),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
