"""dogvae.web.PinServerRoot, driven as an ASGI app with a fake server behind it."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from dogvae.web import PinServerRoot, root_script

PAGE = b"<!doctype html><html><head><title>dogvae</title></head><body></body></html>"


def fake_server(body: bytes = PAGE, content_type: bytes = b"text/html; charset=utf-8", chunks=1):
    """An ASGI app that records the request it got and answers with ``body``.

    It compresses when asked (Accept-Encoding: gzip), as Streamlit's server does,
    and sends the body in ``chunks`` pieces.
    """
    seen: list[dict] = []

    async def app(scope, receive, send):
        seen.append(scope)
        headers = dict(scope.get("headers", []))
        payload = body
        response_headers = [
            (b"content-type", content_type),
            (b"etag", b'"abc"'),
            (b"last-modified", b"Wed, 02 Dec 2026 07:27:02 GMT"),
            (b"cache-control", b"no-cache"),
        ]
        if b"gzip" in headers.get(b"accept-encoding", b""):
            payload = gzip.compress(body)
            response_headers.append((b"content-encoding", b"gzip"))
        response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        size = -(-len(payload) // chunks)
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, piece in enumerate(pieces):
            more = i < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    return app, seen


def call(app, path: str, method: str = "GET", kind: str = "http"):
    """Run one request through ``app``; return (status, headers dict, body, messages)."""
    messages: list[dict] = []
    scope = {
        "type": kind,
        "method": method,
        "path": path,
        "headers": [(b"accept-encoding", b"gzip, deflate"), (b"host", b"127.0.0.1")],
    }

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, messages


@pytest.mark.parametrize("path", ["/", "/generate", "/train", "/generate/"])
def test_every_page_gets_the_servers_root_at_the_top_of_its_head(path):
    server, seen = fake_server(chunks=3)
    status, headers, body, _ = call(PinServerRoot(server), path)
    script = root_script("")
    assert status == 200
    assert body == PAGE.replace(b"<head>", b"<head>" + script)
    assert b'new URL("/",window.location.origin)' in script
    assert headers[b"content-length"] == str(len(body)).encode()
    # Asked uncompressed, so that it can be edited; the file's validators are dropped.
    assert b"accept-encoding" not in dict(seen[0]["headers"])
    assert dict(seen[0]["headers"])[b"host"] == b"127.0.0.1"
    assert b"content-encoding" not in headers
    assert b"etag" not in headers and b"last-modified" not in headers
    assert headers[b"cache-control"] == b"no-cache"


@pytest.mark.parametrize(
    "path",
    [
        "/_stcore/health",
        "/generate/_stcore/health",
        "/static/js/index.js",
        "/media/abc123.png",
        "/component/x/index.html",
        "/favicon.png",
        "/app/static/logo.png",
    ],
)
def test_assets_media_and_the_clients_api_pass_through_untouched(path):
    server, seen = fake_server()
    _, headers, body, _ = call(PinServerRoot(server), path)
    assert gzip.decompress(body) == PAGE  # compressed as asked: not edited
    assert headers[b"etag"] == b'"abc"'
    assert dict(seen[0]["headers"])[b"accept-encoding"] == b"gzip, deflate"


def test_other_methods_responses_and_pages_without_a_head_pass_through():
    server, _ = fake_server()
    _, headers, body, _ = call(PinServerRoot(server), "/generate", method="POST")
    assert gzip.decompress(body) == PAGE
    json_server, _ = fake_server(body=b'{"ok": 1}', content_type=b"application/json")
    _, headers, body, _ = call(PinServerRoot(json_server), "/generate")
    assert body == b'{"ok": 1}' and headers[b"etag"] == b'"abc"'
    headless, _ = fake_server(body=b"<html><body>no head</body></html>")
    _, headers, body, _ = call(PinServerRoot(headless), "/")
    assert body == b"<html><body>no head</body></html>"
    assert headers[b"content-length"] == str(len(body)).encode()
    # A page that already sets the client's configuration keeps its own.
    own = b"<html><head><script>window.__streamlit={}</script></head></html>"
    configured, _ = fake_server(body=own)
    assert call(PinServerRoot(configured), "/")[2] == own


def test_a_base_path_moves_the_root_and_leaves_other_addresses_alone():
    server, _ = fake_server()
    pinned = PinServerRoot(server, base_path="/dogs/")
    body = call(pinned, "/dogs/generate")[2]
    assert b'new URL("/dogs/",window.location.origin)' in body
    assert call(pinned, "/dogs")[2].count(b"BACKEND_BASE_URL") == 1
    assert gzip.decompress(call(pinned, "/dogs/_stcore/host-config")[2]) == PAGE
    assert gzip.decompress(call(pinned, "/elsewhere")[2]) == PAGE  # not this app's page
    assert root_script("a//b/") == root_script("/a/b")
    assert b'new URL("/a/b/"' in root_script("a/b")


def test_websockets_and_lifespan_pass_straight_through():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    async def nothing():
        return {}

    async def ignore(message):
        pass

    pinned = PinServerRoot(app)
    for kind in ("websocket", "lifespan"):
        asyncio.run(pinned({"type": kind, "path": "/_stcore/stream"}, nothing, ignore))
    assert calls == ["websocket", "lifespan"]


def test_before_signals_runs_the_action_first_then_the_handler_it_replaced():
    import signal

    from dogvae.web import before_signals

    order: list[str] = []
    original = signal.signal(signal.SIGUSR1, lambda number, frame: order.append("previous"))
    try:
        before_signals(lambda: order.append("action"), [signal.SIGUSR1])
        signal.raise_signal(signal.SIGUSR1)
        assert order == ["action", "previous"]
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        before_signals(lambda: order.append("again"), [signal.SIGUSR1])
        signal.raise_signal(signal.SIGUSR1)  # ignored before: only the action runs
        assert order == ["action", "previous", "again"]
    finally:
        signal.signal(signal.SIGUSR1, original)


def test_before_signals_keeps_a_default_signal_deadly():
    import signal

    from tests.conftest import run_python

    code = (
        "import signal\n"
        "from dogvae.web import before_signals\n"
        "before_signals(lambda: print('saved', flush=True), [signal.SIGUSR1])\n"
        "signal.raise_signal(signal.SIGUSR1)\n"
        "print('survived', flush=True)\n"
    )
    child = run_python("-c", code, timeout_s=60)
    assert child.stdout == "saved\n", child.stderr
    assert child.returncode == -signal.SIGUSR1


def test_a_server_stuck_after_its_signal_exits_once_the_trainings_are_saved():
    """serve.py's safety net: uvicorn waits for every connection to close, for ever."""
    from tests.conftest import run_python

    code = (
        "import time, serve\n"
        "serve.EXIT_GRACE_SECONDS = 0.5\n"
        "serve._on_signal()\n"
        "serve._on_signal()  # a second signal starts no second saver\n"
        "assert serve._saved.wait(30)\n"
        "print('saved', flush=True)\n"
        "time.sleep(60)  # the server, stuck waiting for a connection\n"
    )
    child = run_python("-c", code, timeout_s=120)
    assert child.stdout == "saved\n", child.stderr[-2000:]
    assert child.returncode == 128 + 15
    assert "dogvae: a connection did not close; exiting" in child.stderr
