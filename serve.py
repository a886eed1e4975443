"""Serve the dogvae app: ``streamlit run serve.py`` (what ``make run`` does).

The app itself is streamlit_app.py and its pages; this file wraps it in
Streamlit's ASGI server (``st.App``) with two additions:

* dogvae.web's PinServerRoot, so that a link straight to a page (``/generate``)
  opens without the client first probing addresses that do not exist;
* a server stopped by Ctrl-C, SIGTERM or ``docker stop`` saves the trainings it
  is running: they are told to stop the moment the signal arrives, and the
  server waits for them to save before it exits (by re-raising the signal, as
  uvicorn does).
"""

import asyncio
import contextlib

import streamlit as st
from starlette.middleware import Middleware

from dogvae.training import save_running_jobs, stop_running_jobs
from dogvae.web import PinServerRoot, before_signals


@contextlib.asynccontextmanager
async def lifespan(_app):
    before_signals(stop_running_jobs)
    yield
    # In a thread: each training saves from its own thread while this one waits.
    await asyncio.to_thread(save_running_jobs)


app = st.App(
    "streamlit_app.py",
    lifespan=lifespan,
    middleware=[
        Middleware(PinServerRoot, base_path=st.get_option("server.baseUrlPath") or ""),
    ],
)
