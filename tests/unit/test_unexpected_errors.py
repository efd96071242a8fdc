"""A bug inside the gateway still answers OpenAI-style JSON 500 with the request id, never a stack trace."""

import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from gateway import settings
from gateway.app import build_app
from gateway.auth import keys
from gateway.pipeline import RequestContext

CONFIG = "audit: false\nmodels:\n  - {name: m, provider: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
BODY = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'


class Broken:
    async def __call__(self, ctx: RequestContext) -> None:
        raise RuntimeError("a bug with a secret detail")


def find_starlette(app: Any) -> Starlette:
    while not isinstance(app, Starlette):
        app = app.app
    return app


async def call(app: Any, key: str) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
    }  # fmt: skip
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], dict(start["headers"]), body


async def test_a_bug_in_a_stage_is_a_json_500_with_the_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    loaded = settings.load(config)
    key = keys.create(loaded.keys_path, "t", None, None, None)
    app = build_app(loaded)
    gateway = find_starlette(app).state.gateway
    gateway.pipeline.stages = (*gateway.pipeline.stages[:-1], Broken())
    with caplog.at_level(logging.ERROR):
        status, headers, body = await call(app, key)
    assert status == 500
    assert headers[b"content-type"] == b"application/json"
    request_id = headers[b"x-request-id"].decode()
    assert body.startswith(
        b'{"error":{"message":"The gateway failed to handle this request (request id ' + request_id.encode()
    )
    assert b"internal_error" in body
    assert b"secret detail" not in body and b"Traceback" not in body
    assert "a bug with a secret detail" in caplog.text  # the operator's log has it
