"""Models: the saved runs, to pick the active one, download it or delete it; and the
interrupted trainings, to resume.

Only each run's config.json and history.csv (and each checkpoint's small state)
are read here, so the page opens without loading TensorFlow.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dogvae import export, runs, ui
from dogvae.training import TrainingJob
from dogvae.training.checkpoint import (
    Checkpoint,
    check_same_data,
    data_fingerprint,
    has_checkpoint,
    list_interrupted,
    read_checkpoint,
)
from dogvae.training.jobs import running_run_dirs

PENDING_DELETE = "models_pending_delete"  # session key: path of the run awaiting "Confirm delete"
NOTICE = "models_notice"  # session key: a message to show once, after a rerun


def number(value: Any, digits: int = 1) -> str:
    """A loss or a duration for reading; a dash when the run did not record it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "–"  # absent, NaN, or hand-edited into something else
    return f"{value:,.{digits}f}"


def created(run: runs.RunInfo) -> str:
    """When the run was saved, in UTC, to the minute."""
    try:
        moment = datetime.fromisoformat(run.created)
    except (TypeError, ValueError):
        return str(run.created or "unknown")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def images(run: runs.RunInfo) -> int | None:
    data = run.config.get("data") or {}
    counts = (data.get("train"), data.get("validation") or 0)
    return sum(counts) if all(isinstance(count, int) for count in counts) else None


def is_active(run: runs.RunInfo, active_path: Path | None) -> bool:
    return active_path is not None and run.path.resolve() == active_path.resolve()


def table_row(run: runs.RunInfo, active: bool) -> dict[str, Any]:
    return {
        "active": active,
        "run": run.name,
        "preset": run.config.get("preset", ""),
        "status": run.config.get("status", ""),
        "created": created(run)[:10],
        "epochs": run.config.get("epochs_completed"),
        "images": images(run),
        "latent size": run.model_config.latent_dim,
        "loss": run.final.get("loss"),
        "val loss": run.final.get("val_loss"),
        "seconds": run.config.get("seconds"),
    }


def settings(run: runs.RunInfo) -> str:
    model, train = run.model_config, run.train_config
    colour = "grayscale" if model.channels == 1 else "RGB"
    start = (run.config.get("init_from") or {}).get("run")
    return (
        f"Preset **{run.config.get('preset', 'custom')}** · latent size **{model.latent_dim}** · "
        f"{model.image_size}×{model.image_size} {colour} · "
        f"{run.config.get('epochs_completed', '?')} of {train.epochs} epochs · "
        f"batch size {train.batch_size} · learning rate {train.learning_rate:g}"
        + (" (cosine)" if train.lr_schedule == "cosine" else "")
        + (" · mirrored images" if train.flip else "")
        + (f" · images moved up to {train.shift} px" if train.shift else "")
        + (f" · continued from `{Path(start).name}`" if start else "")
    )


def dataset(run: runs.RunInfo) -> str:
    data = run.config.get("data") or {}
    source = f" from `{data['source']}`" if data.get("source") else ""
    if images(run) is None:
        return f"Trained on an unrecorded number of images{source}."
    return (
        f"Trained on {data['train']:,} images, validated on {data.get('validation') or 0:,}"
        f"{source}."
    )


def outcome(run: runs.RunInfo) -> None:
    status = run.config.get("status", "finished")
    message = run.config.get("message", "")
    if status in ("finished", "budget"):
        st.caption(f"Finished: {message}" if message else "Finished.")
    elif status == "stopped":
        st.warning(f"Stopped before the last epoch: {message}", icon="⏹️")
    elif status == "diverged":
        st.warning(f"Training diverged: {message}", icon="⚠️")
    else:
        st.warning(f"Training ended as {status!r}: {message}")


def losses(run: runs.RunInfo) -> str:
    final = run.final
    line = (
        f"Final loss **{number(final.get('loss'))}** (reconstruction "
        f"{number(final.get('reconstruction'))} + KL {number(final.get('kl'))})"
    )
    if final.get("val_loss") is not None:
        line += f" · validation **{number(final.get('val_loss'))}**"
    return f"{line} · trained for {number(run.config.get('seconds'), 0)} s · saved {created(run)}"


def loss_axis(values: pd.Series, epochs: pd.Series) -> tuple[float, float, bool]:
    """The loss axis' (low, high) around the curve, and whether epoch 1 lies above it.

    Epoch 1's loss is often several times the rest (the KL term before it settles): an
    axis from 0, or up to it, would draw the learning after it as a flat line.
    """
    later = epochs > 1
    # With one epoch after the first, the curve is those two points: show both.
    top = values[later].max() if epochs[later].nunique() >= 2 else values.max()
    low, high = values.min(), max(top, values.min())
    margin = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    return float(low - margin), float(high + margin), bool(values.max() > high + margin)


def loss_curve(run: runs.RunInfo) -> None:
    history = pd.DataFrame(runs.read_history(run.path))
    columns = [
        column
        for column in ("loss", "val_loss")
        if column in history and history[column].notna().any()
    ]
    if "epoch" not in history or not columns:
        st.caption("No loss history was saved with this run.")
        return
    long = history[["epoch", *columns]].melt(
        id_vars="epoch", var_name="series", value_name="per image"
    )
    long = long.dropna(subset=["per image"])
    low, high, first_above = loss_axis(long["per image"], long["epoch"])
    st.vega_lite_chart(
        long,
        {
            "mark": {"type": "line", "clip": True, "tooltip": True},
            "encoding": {
                "x": {"field": "epoch", "type": "quantitative", "title": "epoch"},
                "y": {
                    "field": "per image",
                    "type": "quantitative",
                    "title": "loss per image",
                    "scale": {"domain": [low, high], "zero": False, "nice": False},
                },
                "color": {"field": "series", "type": "nominal", "title": None},
            },
            "height": 220,
        },
    )
    if first_above:
        first = long.loc[long["epoch"] == long["epoch"].min(), "per image"].max()
        st.caption(
            f"Epoch 1 ({number(first)}) is above the chart, so that the learning after it shows."
        )


def forget(path: Path) -> None:
    """Drop the session's references to a deleted run; the active one falls back to the newest."""
    if st.session_state.get(ui.ACTIVE_RUN) == str(path):
        del st.session_state[ui.ACTIVE_RUN]
    st.session_state.pop(PENDING_DELETE, None)


def delete(run: runs.RunInfo) -> None:
    try:
        runs.delete_run(run.path)
    except FileNotFoundError:
        forget(run.path)  # another session (or a hand) was first: the outcome is the same
        st.session_state[NOTICE] = f"Run {run.name} was already deleted, in another session."
        st.rerun()
    except (OSError, ValueError) as error:
        st.session_state.pop(PENDING_DELETE, None)
        st.error(
            f"Could not delete {run.name}: {error}. Check that the runs folder is writable, "
            f"or delete `{run.path}` by hand."
        )
        return
    forget(run.path)
    st.session_state[NOTICE] = f"Deleted run {run.name}."
    st.rerun()


def resume_data(saved: Checkpoint):
    """The data an interrupted run trained on: the session's, or loaded again from its source."""
    loaded = ui.dataset()
    if loaded is not None and data_fingerprint(loaded) == saved.settings.get("fingerprint"):
        return loaded
    source = saved.settings.get("source") or {}
    if source.get("path") and Path(source["path"]).exists():
        from dogvae.data import load_dataset

        with st.spinner(f"Loading {Path(source['path']).name} again…"):
            dataset = load_dataset(
                source["path"], saved.configs()[2], allowed_root=source.get("data_root")
            )
        check_same_data(saved, dataset)
        return dataset
    shown = (saved.settings.get("data") or {}).get("source", "its dataset")
    raise ValueError(
        f"its data is not loaded; load {shown!r} on the Data page as it was, then Resume again"
    )


def resume(run_dir: Path) -> None:
    """Go on with an interrupted training in this session's TrainingJob, on the Train page."""
    job = ui.training_job()
    if job is not None and job.running:
        st.error("This session is training already; stop that training first, then Resume.")
        return
    try:
        saved = read_checkpoint(run_dir)
        job = TrainingJob.resuming(
            saved,
            resume_data(saved),
            slots=ui.training_slots(ui.max_trainings()),
            is_wanted=ui.session_is_open(),
            abandon_after=ui.abandon_seconds(),
        ).start()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        st.error(f"Could not resume {run_dir.name}: {error}")
        return
    st.session_state[ui.JOB] = job
    st.session_state.pop("job_announced", None)
    st.switch_page("pages/train.py")


def interrupted_card(saved: Checkpoint, running: bool) -> None:
    run_dir = saved.path.parent
    with st.container(border=True):
        badge = ":blue-badge[training]" if running else ":orange-badge[interrupted]"
        st.subheader(f"{run_dir.name} {badge}")
        settings = saved.settings
        st.markdown(
            f"{saved.describe().capitalize()} · preset **{settings.get('preset', 'custom')}** · "
            f"trained for {number(saved.state.get('seconds'), 0)} s · last checkpoint "
            f"{str(saved.state.get('written', '?'))[:16].replace('T', ' ')} UTC"
        )
        if running:
            st.caption("Training now on this server; its checkpoint is kept up to date.")
        elif st.button(
            "Resume",
            key=f"resume-{run_dir.name}",
            type="primary",
            help="Go on from the last checkpoint to the planned end, with the run's settings",
        ):
            resume(run_dir)


def run_card(run: runs.RunInfo, active: bool) -> None:
    with st.container(border=True):
        bundled = ui.is_default_run(run.path)
        badges = (" :green-badge[active]" if active else "") + (
            " :blue-badge[ships with dogvae]" if bundled else ""
        )
        st.subheader(run.name + badges)
        details, chart = st.columns([3, 2])
        with details:
            st.markdown(settings(run))
            st.markdown(dataset(run))
            st.markdown(losses(run))
            outcome(run)
        with chart:
            loss_curve(run)

        with st.container(horizontal=True):
            if st.button("Make active", key=f"activate-{run.name}", disabled=active):
                ui.set_active_run(run.path)
                st.rerun()  # the sidebar and the badges were drawn with the old one
            st.download_button(
                "Download ZIP",
                data=functools.partial(runs.zip_run, run.path),  # zipped only when clicked
                file_name=f"{run.name}.zip",
                mime="application/zip",
                key=f"download-{run.name}",
                on_click="ignore",
            )
            st.download_button(
                "Download decoder (ONNX)",
                # Exported only when clicked: it loads the model (TensorFlow).
                data=functools.partial(export.export_zip, run.path),
                file_name=f"{run.name}-decoder.zip",
                mime="application/zip",
                key=f"download-decoder-{run.name}",
                on_click="ignore",
                help="decoder.onnx and export.json, as `python -m dogvae export` writes them and "
                "the Generate page's browser decoder loads them",
            )
            if st.button(
                "Delete",
                key=f"delete-{run.name}",
                disabled=bundled,
                help="The pretrained model that ships with dogvae stays" if bundled else None,
            ):
                st.session_state[PENDING_DELETE] = str(run.path)

        if st.session_state.get(PENDING_DELETE) == str(run.path):
            st.warning(f"Delete run **{run.name}**? This cannot be undone.")
            with st.container(horizontal=True):
                if st.button("Confirm delete", key=f"confirm-delete-{run.name}", type="primary"):
                    delete(run)
                if st.button("Cancel", key=f"cancel-delete-{run.name}"):
                    st.session_state.pop(PENDING_DELETE, None)
                    st.rerun()


ui.sidebar()
st.title("Models")
st.caption(f"Runs folder: `{ui.runs_dir()}`")
if notice := st.session_state.pop(NOTICE, None):
    st.success(notice)

found, problems = ui.list_runs()
problems = [(path, why) for path, why in problems if not has_checkpoint(path)]
active_path = ui.active_run_path()
pending = st.session_state.get(PENDING_DELETE)
if pending and all(str(run.path) != pending for run in found):
    # Deleted elsewhere between the Delete click and now: nothing is left to confirm.
    st.session_state.pop(PENDING_DELETE)
    st.info(f"Run {Path(pending).name} was deleted in another session meanwhile.")
interrupted = list_interrupted(ui.runs_dir())
live = running_run_dirs()
for saved in interrupted:
    interrupted_card(saved, saved.path.parent.resolve() in live)

if not found and not interrupted:
    st.info(
        "No saved runs yet. Train a model on the **Train** page, or copy a run folder "
        f"(with its config.json and .keras files) into `{ui.runs_dir()}`."
    )
else:
    st.dataframe(
        [table_row(run, is_active(run, active_path)) for run in found],
        hide_index=True,
        column_config={
            "active": st.column_config.CheckboxColumn("active", width="small"),
            "loss": st.column_config.NumberColumn(format="%.1f"),
            "val loss": st.column_config.NumberColumn(format="%.1f"),
            "seconds": st.column_config.NumberColumn(format="%.0f"),
        },
    )

for path, why in problems:
    st.warning(
        f"Skipped the folder `{path.name}`: {why}. Delete it by hand, or train the model again.",
        icon="🗂️",
    )

for run in found:
    run_card(run, is_active(run, active_path))
