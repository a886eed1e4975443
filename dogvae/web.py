"""ASGI middleware for the app's web server (serve.py); no Streamlit import here.

Streamlit's browser client does not know where the server's root is. Opened on a
page's own address (a bookmark or a shared link such as ``/generate``), it first
tries ``/generate/_stcore/health`` and ``/generate/_stcore/host-config``, which the
server answers with 404s that every browser logs as errors, and only then the
root. ``PinServerRoot`` writes the root into each page it serves, as the client's
documented ``window.__streamlit.BACKEND_BASE_URL`` setting, so the client asks the
right address first, whichever page it was opened on.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths under these serve files and media, never a page (nor does any path
# holding ``_stcore/``, the client's API, wherever it is appended).
_NOT_PAGES = ("static/", "media/", "component/", "app/static/", "favicon")


def _trimmed(base_path: str) -> str:
    """``server.baseUrlPath`` without empty parts: "/a//b/" -> "a/b"."""
    return "/".join(part for part in base_path.split("/") if part)


def root_script(base_path: str = "") -> bytes:
    """The <script> that points the client at the server's root, ``/base_path/``."""
    base = _trimmed(base_path)
    root = f"/{base}/" if base else "/"
    return (
        "<script>window.__streamlit=Object.assign(window.__streamlit||{},"
        f"{{BACKEND_BASE_URL:new URL({json.dumps(root)},window.location.origin).href}})"
        "</script>"
    ).encode()


class PinServerRoot:
    """Put ``root_script`` at the top of the <head> of every HTML page served.

    Only GET requests for page addresses are touched (not assets, media
    or the client's API). Their request loses its Accept-Encoding, so the page
    comes back uncompressed (it is 2 kB) and can be edited; any other response
    passes through unchanged, and so does a page without a <head>.
    """

    def __init__(self, app: ASGIApp, base_path: str = "") -> None:
        self.app = app
        self.base = _trimmed(base_path)
        self.script = root_script(base_path)

    def _is_page(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "GET":
            return False
        path = scope.get("path", "").lstrip("/")
        if self.base:
            if path != self.base and not path.startswith(self.base + "/"):
                return False
            path = path[len(self.base) :].lstrip("/")
        last = path.rsplit("/", 1)[-1]
        return not path.startswith(_NOT_PAGES) and "_stcore/" not in path and "." not in last

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_page(scope):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [
            (name, value) for name, value in scope.get("headers", []) if name != b"accept-encoding"
        ]
        start: Message | None = None
        body: list[bytes] = []

        async def edit(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                if html and b"content-encoding" not in headers:
                    start = message  # held back until the whole page is here
                    return
            elif message["type"] == "http.response.body" and start is not None:
                body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                page = self._edited(b"".join(body))
                # The file's validators do not describe the edited page: dropped, so
                # no cache can answer for it with a page it holds from elsewhere.
                headers = [
                    (name, value)
                    for name, value in start.get("headers", [])
                    if name not in (b"content-length", b"etag", b"last-modified")
                ]
                headers.append((b"content-length", str(len(page)).encode()))
                await send({**start, "headers": headers})
                await send(
                    {
                        "type": "http.response.body",
                        "body": page,
                        "more_body": False,
                    }
                )
                return
            await send(message)

        await self.app(scope, receive, edit)

    def _edited(self, page: bytes) -> bytes:
        head = page.find(b"<head>")
        if head < 0 or b"__streamlit" in page:
            return page
        at = head + len(b"<head>")
        return page[:at] + self.script + page[at:]


def before_signals(
    action: Callable[[], object], signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)
) -> None:
    """When one of ``signals`` arrives, run ``action()``, then what handled it until now.

    The server (uvicorn) answers Ctrl-C and SIGTERM by waiting for every open
    connection to close before it shuts the app down, and a connection that never
    closes would hold that up for good; ``action`` runs at once. It runs in the main
    thread, between two of its steps, so it must be quick. Call from the main thread.
    """
    for number in signals:
        previous = signal.getsignal(number)

        def handler(received, frame, previous=previous):
            action()
            if callable(previous):
                previous(received, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(received, signal.SIG_DFL)
                signal.raise_signal(received)

        signal.signal(number, handler)
