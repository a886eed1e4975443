"""Data: choose a dataset (upload a CSV or ZIP, or pick one on the server), see its report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import streamlit as st

from dogvae import ui
from dogvae.config import IMAGE_SIZES, DataConfig
from dogvae.data import Dataset, Upload, list_sources, load_dataset

st.title("Data")
st.write(
    "Give dogvae dog photos: a CSV whose `filepaths` column lists image files, a ZIP of "
    "images (with or without such a CSV inside), or a dataset already on the server. "
    "Unreadable images are listed with the reason and left out; the rest are used."
)

with st.expander("Image settings", expanded=False):
    size_column, colour_column, limit_column = st.columns(3)
    image_size = size_column.selectbox("Image size", IMAGE_SIZES, index=IMAGE_SIZES.index(64))
    colour = colour_column.radio("Colour", ["Grayscale", "RGB"], horizontal=True)
    limit = limit_column.number_input(
        "Use at most (0 = all images)", min_value=0, max_value=10_000_000, value=0, step=100
    )
data_config = DataConfig(
    image_size=image_size, channels=1 if colour == "Grayscale" else 3, limit=limit or None
)


def load(source: Path | Upload, shown_as: str, **options) -> None:
    """Load a dataset into the session, keeping the previous one if this fails."""
    bar = st.progress(0.0, text="Reading images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Reading images… {done:,} of {total:,}")

    try:
        dataset = load_dataset(source, data_config, progress=progress, **options)
    except (ValueError, OSError) as error:
        bar.empty()
        st.error(f"{error}\n\nFix the file and upload it again; the previous dataset is kept.")
        return
    bar.empty()
    report = dataclasses.replace(dataset.report, source=shown_as)
    st.session_state[ui.DATASET] = Dataset(dataset.images, dataset.table, report)


upload_tab, server_tab = st.tabs(["Upload", "On the server"])
with upload_tab:
    uploaded = st.file_uploader(
        "Dataset (CSV or ZIP)", type=["csv", "zip"], max_upload_size=ui.DATASET_UPLOAD_MB
    )
    st.caption(
        f"Paths in an uploaded CSV are read relative to the data folder `{ui.data_dir()}`; "
        "paths outside it are reported, never read."
    )
    if uploaded is not None:
        key = (uploaded.file_id, data_config)
        if st.session_state.get("loaded_upload") != key:
            # Handed over as it arrived (never written to disk); a ZIP ignores base_dir.
            upload = Upload(uploaded.name, uploaded)
            load(upload, uploaded.name, base_dir=ui.data_dir(), allowed_root=ui.data_dir())
            st.session_state["loaded_upload"] = key

with server_tab:
    sources = list_sources(ui.data_dir())
    if not sources:
        st.info(
            f"No CSV, ZIP or image folder in the data folder `{ui.data_dir()}`. Set "
            "DOGVAE_DATA_DIR to a folder with datasets, or upload one."
        )
    else:
        choice = st.selectbox(
            "Dataset on the server",
            sources,
            format_func=lambda path: path.name + ("/" if path.is_dir() else ""),
        )
        if st.button("Load", type="primary"):
            load(choice, str(choice.relative_to(ui.data_dir())))

ui.sidebar()  # after any upload above, so it shows the dataset just loaded
dataset = ui.dataset()
if dataset is None:
    st.info("No dataset loaded yet.")
    st.stop()

report = dataset.report
st.subheader(f"Report: {report.source}")
rows, found, readable, unreadable = st.columns(4)
rows.metric("Rows", f"{report.rows:,}")
found.metric("Files found", f"{report.found:,}")
readable.metric("Readable images", f"{report.readable:,}")
unreadable.metric("Unreadable", f"{len(report.unreadable):,}")
if report.readable == 0:
    st.error(
        "Not a single image could be read, so there is nothing to train on. "
        "Check the reasons below: paths must be relative to the data folder and point at images."
    )
else:
    st.write(
        f"**Split:** {report.train:,} training and {report.validation:,} validation images "
        f"({report.split})."
    )
if report.encoding_note():
    st.write(f"**Text encoding:** {report.encoding_note()}.")
if report.unreadable:
    st.write("**Unreadable images** (left out):")
    st.dataframe(
        pd.DataFrame([dataclasses.asdict(item) for item in report.unreadable]),
        hide_index=True,
        width="stretch",
    )
if report.readable:
    channels = "grayscale" if report.channels == 1 else "RGB"
    st.subheader("Preview")
    ui.show_images(
        dataset.images[:16],
        cols=8,
        scale=2,
        caption=f"The first {min(16, report.readable)} images exactly as the model sees them: "
        f"{report.image_size}x{report.image_size} {channels}.",
    )
    st.page_link("pages/train.py", label="Train a model on this dataset", icon="🏋️")
