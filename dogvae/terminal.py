"""The CLI's process and its terminal: signals that stop a training, a hung-up
terminal, and TensorFlow's native banners on fd 2."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

# Signals that stop a training after its current batch and save it: Ctrl-C; kill,
# systemd, docker stop or a batch scheduler; and a closed terminal or ssh session.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that the first of ``STOP_SIGNALS`` sets; a second one aborts.

    The first signal asks the training to stop after its batch (and save, like
    Ctrl-C, instead of losing every epoch); a second raises KeyboardInterrupt.
    The previous handlers come back on exit. Call from the main thread.
    """
    stop = threading.Event()

    def on_signal(signum, frame):
        if signum == getattr(signal, "SIGHUP", None):
            _away_from_the_terminal()
        if stop.is_set():
            raise KeyboardInterrupt
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"stopping after this batch ({again} again to abort without saving)", flush=True)
        stop.set()

    previous = {number: signal.signal(number, on_signal) for number in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _away_from_the_terminal() -> None:
    """Point stdout and stderr at /dev/null: the terminal has hung up, and a write to it
    would fail and end the training before it could save."""
    with open(os.devnull, "wb") as nowhere:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
            with contextlib.suppress(OSError, ValueError):
                os.dup2(nowhere.fileno(), stream.fileno())


def mute_native_stderr() -> None:
    """Send fd 2 to /dev/null for the rest of the process; Python's stderr keeps the terminal.

    TensorFlow's C++ runtime writes banners (oneDNN, CUDA probing) straight to
    fd 2, before and regardless of any log level. dogvae's own messages and
    Python tracebacks go through ``sys.stderr``, which is re-pointed at a copy of
    the original descriptor first, so they still show. DOGVAE_VERBOSE=1 keeps
    everything.
    """
    if os.environ.get("DOGVAE_VERBOSE"):
        return
    sys.stderr.flush()
    try:
        terminal = os.dup(2)
        sys.stderr = open(terminal, "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass  # no usable fd 2 (e.g. closed): nothing to mute
