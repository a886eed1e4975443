"""Train: settings, then a live loss chart, progress, sample grids and a Stop button."""

from __future__ import annotations

import re
import time
from dataclasses import replace

import altair as alt
import pandas as pd
import streamlit as st

from dogvae import ui
from dogvae.config import (
    LR_SCHEDULES,
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_LATENT_DIM,
    MEAN_TERMS,
    PRESETS,
    DataConfig,
    from_preset,
)
from dogvae.training import TrainingJob, running_job_into

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SERIES = {
    "loss": "loss (train)",
    "val_loss": "loss (validation)",
    "reconstruction": "reconstruction (train)",
    "val_reconstruction": "reconstruction (validation)",
    "kl": "kl (train)",
    "val_kl": "kl (validation)",
}

FINISHED = ("finished", "budget", "stopped", "diverged")  # a job that saved a run


def adopt_finished_run(job) -> None:
    """Make the run a job just saved the active model, once, before the sidebar names it."""
    if job is None or job.running or job.status not in FINISHED or job.run_dir is None:
        return
    if not st.session_state.get("job_announced"):
        ui.set_active_run(job.run_dir)
        st.session_state["job_announced"] = True


adopt_finished_run(ui.training_job())
ui.sidebar()
st.title("Train")


def start_weights(model_config) -> tuple[tuple, dict]:
    """The default model's weights and lineage, to fine-tune instead of starting afresh."""
    from dogvae.runs import lineage

    path = ui.default_run_path()
    default = ui.load_run(path)
    if default.info.model_config != model_config:
        raise ValueError(
            "The pretrained default model can only be a starting point for its own "
            f"architecture: preset {default.info.config.get('preset')!r} with latent size "
            f"{default.info.model_config.latent_dim}. Choose those, or start from scratch."
        )
    return default.start_weights(), lineage(default.info)


def start(dataset, preset_name, settings: dict, run_name: str):
    """Validate the form and start a background TrainingJob, or say what is wrong."""
    budget = float(settings["budget_minutes"])
    model_config, train_config = from_preset(
        preset_name,
        latent_dim=int(settings["latent_dim"]),
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        learning_rate=float(settings["learning_rate"]),
        lr_schedule=settings["lr_schedule"],
        kl_warmup_epochs=int(settings["kl_warmup_epochs"]),
        budget_minutes=budget if budget > 0 else None,
        **{key: settings[key] for key in ("mean_weight", "mean_term") if key in settings},
    )
    report = dataset.report
    if (report.image_size, report.channels) != (model_config.image_size, model_config.channels):
        raise ValueError(
            f"The dataset was loaded as {report.image_size}x{report.image_size} with "
            f"{report.channels} channel(s), but preset {preset_name!r} needs "
            f"{model_config.image_size}x{model_config.image_size} with {model_config.channels}. "
            "Change the image settings on the Data page and load it again."
        )
    if not report.train:
        raise ValueError("The dataset has no training image; load another one on the Data page.")
    if not RUN_NAME.match(run_name):
        raise ValueError(
            "Run names use letters, digits, '.', '_' and '-' (at most 64, starting with a "
            f"letter or digit); got {run_name!r}."
        )
    out_dir = ui.runs_dir() / run_name
    if out_dir.exists():
        raise ValueError(f"A run named {run_name!r} already exists; choose another name.")
    if running_job_into(out_dir) is not None:
        raise ValueError(
            f"A training named {run_name!r} is already running on this server (another "
            "session started it); choose another name."
        )
    # A dataset from the server's data folder can be loaded again to resume; an upload cannot.
    source_path = ui.data_dir() / report.source
    source = {"path": str(source_path), "data_root": None} if source_path.exists() else None
    initial_weights = init_from = None
    if settings.get("from_default"):
        initial_weights, init_from = start_weights(model_config)
        # A trained model needs no warm-up: a KL weight of 0 would only undo its prior.
        train_config = replace(train_config, kl_warmup_epochs=0)
    job = TrainingJob(
        dataset=dataset,
        model_config=model_config,
        train_config=train_config,
        data_config=DataConfig(image_size=report.image_size, channels=report.channels, limit=None),
        out_dir=out_dir,
        preset=preset_name,
        slots=ui.training_slots(ui.max_trainings()),
        is_wanted=ui.session_is_open(),
        abandon_after=ui.abandon_seconds(),
        initial_weights=initial_weights,
        init_from=init_from,
        tensorboard_dir=ui.tensorboard_dir() / run_name if settings.get("tensorboard") else None,
        source=source,
    )
    st.session_state[ui.JOB] = job.start()
    st.session_state.pop("job_announced", None)
    st.session_state.pop("run_name", None)  # the next training gets a fresh default name


def chart_frame(job: TrainingJob) -> pd.DataFrame:
    """Long-format losses: training per reported batch, validation per epoch."""
    records = []
    for event in job.batches():
        position = event["epoch"] - 1 + event["batch"] / event["steps"]
        for key in ("loss", "reconstruction", "kl"):
            records.append({"epoch": position, "value": event[key], "series": SERIES[key]})
    for row in job.epochs():
        for key in ("val_loss", "val_reconstruction", "val_kl"):
            if row.get(key) == row.get(key) and key in row:  # NaN when there is no validation
                records.append(
                    {"epoch": float(row["epoch"]), "value": row[key], "series": SERIES[key]}
                )
    return pd.DataFrame.from_records(records, columns=["epoch", "value", "series"])


def line_chart(frame: pd.DataFrame) -> alt.Chart:
    """Losses against epochs: the axis fits the values (losses sit near 2,500, far from 0),
    points mark single validation values, the legend sits below so it is not cut."""
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=20))
        .encode(
            x=alt.X("epoch:Q", title="epoch"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", legend=alt.Legend(orient="bottom", columns=2, title=None)),
        )
        .properties(height=280)
    )


def draw(job: TrainingJob) -> None:
    """Progress, charts and the latest sample grid of a job."""
    progress = job.progress()
    epochs = job.train_config.epochs
    if job.running:
        left = progress["seconds_left"]
        text = f"Epoch {progress['epoch']}/{epochs} · batch {progress['batch']}/{progress['steps']}"
        text += f" · about {left:,.0f} s left" if left is not None else " · starting…"
        st.progress(progress["fraction"], text=text)
    frame = chart_frame(job)
    if frame.empty:
        st.caption("The chart appears after the first batches.")
    else:
        # One chart per quantity: reconstruction (~2,500) and kl (~50) share no scale.
        titles = {
            "loss": "Loss per image (reconstruction + kl)",
            "reconstruction": "Reconstruction per image",
            "kl": "KL per image",
        }
        for column, (prefix, title) in zip(st.columns(3), titles.items(), strict=True):
            with column:
                st.caption(title)
                st.altair_chart(line_chart(frame[frame.series.str.startswith(prefix)]))
    # A resumed job's earlier epochs have no sample grids, except the last one.
    rows = [row for row in job.epochs() if "samples" in row]
    if rows:
        latest = rows[-1]
        st.caption(
            f"Samples from a fixed set of latent points after epoch {latest['epoch']} "
            f"({latest['active_units']} of {job.model_config.latent_dim} latent units active)"
        )
        ui.show_images(latest["samples"], cols=8, scale=2)


def collapse_signal(row: dict, latent_dim: int) -> None:
    """Posterior collapse shows as latent units the encoder ignores: KL near 0 for them."""
    active = row["active_units"]
    text = f"**{active} of {latent_dim} latent units active** after epoch {row['epoch']}"
    if active == 0:
        st.warning(
            f"{text}: the encoder ignores its input (posterior collapse). Train longer, or use "
            "KL warm-up (the quality presets do)."
        )
    else:
        st.write(f"{text} (a unit is active when its mean varies across images).")
    kl = pd.DataFrame({"dimension": range(1, latent_dim + 1), "kl": row["kl_per_dim"]})
    st.bar_chart(kl, x="dimension", y="kl", height=180, x_label="latent dimension", y_label="KL")


def default_fits(preset) -> bool:
    """Whether the default model has this preset's architecture (its weights would fit)."""
    from dogvae.runs import read_run_info

    path = ui.default_run_path()
    if path is None:
        return False
    try:
        info = read_run_info(path)
    except (ValueError, FileNotFoundError):
        return False
    default = info.model_config
    return replace(default, latent_dim=preset.model.latent_dim) == preset.model


job = ui.training_job()
dataset = ui.dataset()

if job is not None and job.running:
    st.info(f"Training **{job.out_dir.name}** on {job.dataset.report.source}.")

    @st.fragment(run_every=1.0)
    def live() -> None:
        if not job.running:
            st.rerun(scope="app")  # switch the whole page to the finished state
        if st.button("Stop", type="primary", help="Ends after the current batch; saves the run"):
            job.stop()
            st.toast("Stopping after the current batch…")
        draw(job)

    live()
    st.stop()

if job is not None:
    if job.status in FINISHED and job.run_dir is not None:
        note = {
            "finished": st.success,
            "budget": st.success,
            "stopped": st.warning,
            "diverged": st.warning,
        }[job.status]
        title = (
            "Training finished" if job.status in ("finished", "budget") else "Training ended early"
        )
        note(
            f"{title}: run **{job.run_dir.name}** is saved and now the active model. {job.message}"
        )
        if job.tensorboard_dir is not None:
            st.caption(f"TensorBoard logs: `{job.tensorboard_dir}`")
        st.page_link("pages/generate.py", label="Generate dogs with it", icon="🎲")
    elif job.status == "failed":
        st.error(f"Training failed: {job.message}")
    draw(job)
    rows = job.epochs()
    if rows:
        collapse_signal(rows[-1], job.model_config.latent_dim)
    grids = {row["epoch"]: row["samples"] for row in rows if "samples" in row}
    if len(grids) > 1:
        # Contiguous: a resumed job has grids from its first epoch on (and the one before).
        shown = st.slider("Samples after epoch", min(grids), max(grids), max(grids))
        ui.show_images(grids[shown], cols=8, scale=2)
    st.divider()

if dataset is None:
    st.info("Load a dataset on the Data page first.")
    st.page_link("pages/data.py", label="Go to Data", icon="🗂️")
    st.stop()
if dataset.report.readable == 0:
    st.error("The loaded dataset has no readable image. Load another one on the Data page.")
    st.stop()

st.write(f"Dataset: **{dataset.report.source}**, {dataset.report.summary()}.")
preset_name = st.selectbox(
    "Preset", list(PRESETS), format_func=lambda name: f"{name}: {PRESETS[name].description}"
)
preset = PRESETS[preset_name]
with st.form("settings"):
    settings = {}
    epochs_column, batch_column, latent_column, rate_column = st.columns(4)
    settings["epochs"] = epochs_column.number_input(
        "Epochs", min_value=1, max_value=MAX_EPOCHS, value=preset.train.epochs
    )
    settings["batch_size"] = batch_column.number_input(
        "Batch size", min_value=1, max_value=MAX_BATCH_SIZE, value=preset.train.batch_size
    )
    settings["latent_dim"] = latent_column.number_input(
        "Latent size", min_value=1, max_value=MAX_LATENT_DIM, value=preset.model.latent_dim
    )
    settings["learning_rate"] = rate_column.number_input(
        "Learning rate",
        min_value=1e-6,
        max_value=1.0,
        value=preset.train.learning_rate,
        format="%.5f",
        step=1e-4,
    )
    schedule_column, warmup_column, budget_column = st.columns([2, 1, 1])
    settings["lr_schedule"] = schedule_column.selectbox(
        "Learning-rate schedule",
        LR_SCHEDULES,
        index=LR_SCHEDULES.index(preset.train.lr_schedule),
        help="Cosine falls to 1% of the rate by the last epoch or the time budget, "
        "whichever comes first.",
    )
    settings["kl_warmup_epochs"] = warmup_column.number_input(
        "KL warm-up epochs",
        min_value=0,
        max_value=MAX_EPOCHS,
        value=preset.train.kl_warmup_epochs,
        help="The KL term's weight rises from 0 to 1 over these epochs, against early "
        "posterior collapse.",
    )
    settings["budget_minutes"] = budget_column.number_input(
        "Time budget (minutes)",
        min_value=0.0,
        max_value=7 * 24 * 60.0,
        value=0.0,
        step=5.0,
        help="Stop and save after this much training time; 0 for no limit.",
    )
    if preset.model.likelihood == "logistic-ar":
        settings["mean_weight"] = st.number_input(
            "Mean weight",
            min_value=0.0,
            max_value=100.0,
            value=float(preset.train.mean_weight),
            step=0.5,
            help="The weight of the mean image's own term beside the likelihood: it "
            "keeps decoder.keras sharp (0: the likelihood alone, better bits/dim, blurrier "
            "means). The reported loss is the -ELBO either way.",
        )
        settings["mean_term"] = st.selectbox(
            "Mean term",
            MEAN_TERMS,
            index=MEAN_TERMS.index(preset.train.mean_term),
            help="logistic: the mean's discretised logistic at the head's scales (each "
            "pixel's error weighed by how sure the head is); gaussian: its squared errors "
            "over the batch's mean squared error, which aims the mean at PSNR.",
        )
    if default_fits(preset):
        settings["from_default"] = st.checkbox(
            "Start from the pretrained default model",
            help="Fine-tune its weights on this dataset instead of starting from random ones: "
            "recognisable dogs after a few epochs even on a small dataset. The KL warm-up is "
            "skipped, since the model is already trained.",
        )
    st.session_state.setdefault("run_name", f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_name = st.text_input("Run name", key="run_name")
    settings["tensorboard"] = st.checkbox(
        "Write TensorBoard logs",
        key="tensorboard",  # the help names a folder; the key keeps the widget when it changes
        help=f"Losses, learning rate, KL per latent dimension and sample grids, into "
        f"`{ui.tensorboard_dir()}/<run name>`; watch with `tensorboard --logdir "
        f"{ui.tensorboard_dir()}` (TensorBoard is installed separately).",
    )
    submitted = st.form_submit_button("Start training", type="primary")

if submitted:
    try:
        start(dataset, preset_name, settings, run_name.strip())
    except (ValueError, RuntimeError, OSError) as error:
        st.error(str(error))
    else:
        st.rerun()
