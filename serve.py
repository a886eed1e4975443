"""Serve the dogvae app: ``streamlit run serve.py`` (what ``make run`` does).

The app itself is streamlit_app.py and its pages; this file wraps it in
Streamlit's ASGI server (``st.App``) with two additions:

* dogvae.web's PinServerRoot, so that a link straight to a page (``/generate``)
  opens without the client first probing addresses that do not exist;
* a server stopped by Ctrl-C, SIGTERM or ``docker stop`` saves the trainings it
  is running: they are told to stop the moment the signal arrives and saved
  from a thread of their own, and the server exits once they are saved (by
  re-raising the signal, as uvicorn does).
"""

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time

import streamlit as st
from starlette.middleware import Middleware

from dogvae.training import save_running_jobs, stop_running_jobs
from dogvae.web import PinServerRoot, before_signals

# Uvicorn waits, with no time limit, for every open connection to close before it
# shuts the app down, and now and then one never does: once the trainings are saved,
# the server gets this long to exit by itself.
EXIT_GRACE_SECONDS = 15.0

_saving = threading.Lock()
_saved = threading.Event()  # set once the trainings running at the signal are saved


def _save_then_exit() -> None:
    save_running_jobs()
    _saved.set()
    time.sleep(EXIT_GRACE_SECONDS)  # a daemon thread: a server that exits ends it here
    print("dogvae: a connection did not close; exiting", file=sys.stderr, flush=True)
    os._exit(128 + signal.SIGTERM)  # as a shell reports a death by SIGTERM


def _on_signal() -> None:
    stop_running_jobs()
    if _saving.acquire(blocking=False):  # the first signal only
        threading.Thread(target=_save_then_exit, name="dogvae-save", daemon=True).start()


@contextlib.asynccontextmanager
async def lifespan(_app):
    before_signals(_on_signal)
    yield
    if _saving.locked():  # a signal came: its thread saves, this one waits for it
        await asyncio.to_thread(_saved.wait)
    else:
        await asyncio.to_thread(save_running_jobs)


app = st.App(
    "streamlit_app.py",
    lifespan=lifespan,
    middleware=[
        Middleware(PinServerRoot, base_path=st.get_option("server.baseUrlPath") or ""),
    ],
)
