"""A fast mock OpenAI-wire model server: a raw ASGI app, also the upstream for benchmarks.

Model endpoints (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`,
`/v1/models`) answer in the exact wire format the official `openai` SDK parses; the default
answer is `"Echo: " + <last user text>` so a test can check that content round-trips. A token is one
whitespace-separated word. Like the real API, a text answer honours the request's length cap
(`max_completion_tokens` or `max_tokens` for chat, `max_tokens` for completions, `max_output_tokens` for
Responses): a longer answer is cut to its first `cap` words and ends with finish_reason "length" (a
Responses answer is `status: "incomplete"`, `incomplete_details.reason: "max_output_tokens"`); usage counts
the cut answer. Tool-call arguments and JSON-mode answers are never cut.

Control endpoints, for tests:
    GET|POST|DELETE /_mock/faults    the runtime fault table (see `mock_faults`)
    GET|DELETE      /_mock/requests  the last `max_recorded` requests: method, path, headers, body
    GET|DELETE      /_mock/stats     requests_total, active_streams, streams_completed,
                                     streams_cancelled (client went away), streams_aborted (injected cut)
    GET             /health

Run: `python -m load_tests.mock_upstream --port 9000 [--latency-ms N] [--chunk-delay-ms N] [--api-key K]`.
In tests: `with running(MockConfig(...)) as mock: OpenAI(base_url=mock.url + "/v1", ...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from load_tests import mock_wire as wire
from load_tests.mock_asgi import ClientGone, drop_connection, pause, read_body, respond, wait_disconnect
from load_tests.mock_faults import Fault, FaultError, FaultTable

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
MODELS = ("mock-model", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")


@dataclass
class MockConfig:
    """How the mock answers. `reply=None` means echo: `"Echo: " + <last user text>`."""

    latency_ms: float = 0
    chunk_delay_ms: float = 0
    api_key: str | None = None
    reply: str | None = None
    max_recorded: int = 100


@dataclass
class Stats:
    requests_total: int = 0
    active_streams: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    streams_aborted: int = 0


class MockUpstream:
    """The ASGI app. All state lives here: config, fault table, recorded requests, stream counters."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.faults = FaultTable()
        self.recorded: deque = deque(maxlen=self.config.max_recorded)
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._auth = b"Bearer " + self.config.api_key.encode() if self.config.api_key else None
        models = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"} for m in MODELS]
        self._models = orjson.dumps({"object": "list", "data": models})
        self._model_routes = {
            "/v1/chat/completions": self.chat,
            "/v1/completions": self.completions,
            "/v1/embeddings": self.embeddings,
            "/v1/responses": self.responses,
        }

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            kind = (await receive())["type"]
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return

    async def http(self, scope: dict, receive: Any, send: Any) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith("/_mock/"):
            return await self.control(method, path, receive, send)
        if path == "/health":
            return await respond(send, 200, b'{"status":"ok"}')
        body = await read_body(receive)
        self.stats.requests_total += 1
        self.recorded.append((method, path, scope["headers"], body))
        if self._auth is not None and not self.authorized(scope["headers"]):
            return await respond(send, 401, wire.error_body(401, "Incorrect API key provided.", "invalid_api_key"))
        if method == "GET" and path == "/v1/models":
            return await respond(send, 200, self._models)
        handler = self._model_routes.get(path)
        if handler is None:
            return await respond(
                send, 404, wire.error_body(404, f"Unknown request URL: {method} {path}.", "unknown_url")
            )
        if method != "POST":
            return await respond(send, 405, wire.error_body(405, f"Method {method} not allowed on {path}."))
        await self.model_request(handler, body, receive, send)

    def authorized(self, headers: list) -> bool:
        return any(name == b"authorization" and value == self._auth for name, value in headers)

    async def model_request(self, handler: Any, raw: bytes, receive: Any, send: Any) -> None:
        """Parse the JSON body, apply the fault for its model, then let the endpoint answer."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return await respond(send, 400, wire.error_body(400, "We could not parse the JSON body of your request."))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return await respond(send, 400, wire.error_body(400, "you must provide a model parameter", param="model"))
        fault = self.faults.lookup(body["model"])
        if fault is not None and await self.apply_fault(fault, body, receive, send):
            return
        if self.config.latency_ms and not body.get("stream"):
            await asyncio.sleep(self.config.latency_ms / 1000)
        await handler(body, receive, send, fault)

    async def apply_fault(self, fault: Fault, body: dict, receive: Any, send: Any) -> bool:
        """Carry out the parts of `fault` that happen before an answer; True if the request is finished."""
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.hang:
            await wait_disconnect(receive)
        elif fault.disconnect == "before":
            await drop_connection(send, lambda: wait_disconnect(receive))
        elif fault.status is not None:
            payload = orjson.dumps(fault.body) if fault.body is not None else None
            payload = payload or wire.error_body(fault.status, f"Injected fault for model {body['model']}.")
            extra = [(b"retry-after", str(fault.retry_after).encode())] if fault.retry_after is not None else []
            await respond(send, fault.status, payload, extra)
        else:
            return False
        return True

    def reply(self, user_text: str) -> str:
        return self.config.reply if self.config.reply is not None else "Echo: " + user_text

    def new_id(self, prefix: str) -> str:
        return f"{prefix}mock{next(self._ids)}"

    # ------------------------------------------------------------ model endpoints

    async def chat(self, body: dict, receive: Any, send: Any, fault: Fault | None) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return await respond(
                send, 400, wire.error_body(400, "'messages' must be a non-empty array.", param="messages")
            )
        user, tool = wire.last_user_text(messages), wire.chosen_tool(body)
        head = {"id": self.new_id("chatcmpl-"), "created": int(time.time()), "model": body["model"]}
        call_id, arguments = self.new_id("call_"), wire.echo_json(user)
        text: str | None
        if tool:
            text, finish = None, "tool_calls"
        elif wire.wants_json(body):
            text, finish = arguments, "stop"
        else:
            text, was_cut = wire.cut(self.reply(user), wire.answer_cap(body, "max_completion_tokens", "max_tokens"))
            finish = "length" if was_cut else "stop"
        usage = wire.chat_usage(wire.prompt_words(messages), wire.words(arguments if tool else text or ""))
        if body.get("stream"):
            deltas = wire.tool_deltas(tool, call_id, arguments) if tool else wire.text_deltas(text or "")
            chunks = wire.chat_chunks(head, deltas, finish, usage if include_usage(body) else None)
            return await self.stream(chunks, receive, send, fault)
        message = wire.chat_message(text, tool, call_id, arguments)
        await respond(send, 200, wire.chat_completion(head, message, finish, usage))

    async def completions(self, body: dict, receive: Any, send: Any, fault: Fault | None) -> None:
        prompt = wire.first_prompt(body.get("prompt"))
        text, was_cut = wire.cut(self.reply(prompt), wire.answer_cap(body, "max_tokens"))
        finish = "length" if was_cut else "stop"
        head = {"id": self.new_id("cmpl-"), "created": int(time.time()), "model": body["model"]}
        usage = wire.chat_usage(wire.words(prompt), wire.words(text))
        if body.get("stream"):
            chunks = wire.completion_chunks(head, text, finish, usage if include_usage(body) else None)
            return await self.stream(chunks, receive, send, fault)
        await respond(send, 200, wire.completion(head, text, finish, usage))

    async def embeddings(self, body: dict, receive: Any, send: Any, fault: Fault | None) -> None:
        items = wire.embedding_inputs(body.get("input"))
        dimensions = body.get("dimensions") or 8
        if not items or not all(isinstance(i, (str, list)) for i in items):
            return await respond(send, 400, wire.error_body(400, "'input' is required.", param="input"))
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
            return await respond(send, 400, wire.error_body(400, "Invalid 'dimensions'.", param="dimensions"))
        as_base64 = body.get("encoding_format") == "base64"
        await respond(send, 200, wire.embeddings(body["model"], items, dimensions, as_base64))

    async def responses(self, body: dict, receive: Any, send: Any, fault: Fault | None) -> None:
        items, fmt = body.get("input"), (body.get("text") or {}).get("format") or {}
        user = wire.last_user_text(items)
        was_cut = False
        if fmt.get("type") in ("json_object", "json_schema"):
            text = wire.echo_json(user)
        else:
            text, was_cut = wire.cut(self.reply(user), wire.answer_cap(body, "max_output_tokens"))
        status = "incomplete" if was_cut else "completed"
        instructions = body["instructions"] if isinstance(body.get("instructions"), str) else ""
        usage = wire.responses_usage(wire.prompt_words(items) + wire.words(instructions), wire.words(text))
        head = {"id": self.new_id("resp_"), "created_at": int(time.time()), "model": body["model"]}
        msg_id = self.new_id("msg_")
        if body.get("stream"):
            events = wire.response_events(body, head, msg_id, text, usage, status)
            return await self.stream(events, receive, send, fault)
        output = [wire.output_message(msg_id, text, status)]
        await respond(send, 200, orjson.dumps(wire.response_object(body, head, output, usage, status)))

    # ------------------------------------------------------------ streaming

    async def stream(self, chunks: Iterator[bytes], receive: Any, send: Any, fault: Fault | None) -> None:
        """Send SSE `chunks`, honouring latency, chunk delay, an injected cut, and client disconnects."""
        self.stats.active_streams += 1
        watcher = asyncio.ensure_future(wait_disconnect(receive))
        outcome = "streams_cancelled"
        try:
            outcome = await self.send_chunks(chunks, watcher, send, fault)
        except ClientGone:
            pass
        except ConnectionAbortedError:  # an injected cut, under a server other than uvicorn
            outcome = "streams_aborted"
            raise
        finally:
            watcher.cancel()
            self.stats.active_streams -= 1
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)

    async def send_chunks(self, chunks: Iterator[bytes], watcher: Any, send: Any, fault: Fault | None) -> str:
        """The stream itself; returns which counter its outcome goes to, raises ClientGone if the client left."""
        cut = fault.after_chunks if fault is not None and fault.disconnect == "mid_stream" else -1
        delay = self.config.chunk_delay_ms
        if fault is not None and fault.chunk_delay_ms is not None:
            delay = fault.chunk_delay_ms
        await pause(watcher, self.config.latency_ms)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for index, chunk in enumerate(chunks):
            if index == cut:
                await drop_connection(send, lambda: watcher)
                return "streams_aborted"
            if index:
                await pause(watcher, delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if watcher.done():
            raise ClientGone
        await send({"type": "http.response.body", "body": b""})
        return "streams_completed"

    # ------------------------------------------------------------ control endpoints

    async def control(self, method: str, path: str, receive: Any, send: Any) -> None:
        raw = await read_body(receive)
        if path == "/_mock/faults" and method == "POST":
            return await self.set_faults(raw, send)
        if method == "DELETE":
            self.reset(path)
            return await respond(send, 200, b'{"ok":true}')
        views = {
            "/_mock/faults": self.faults_view,
            "/_mock/requests": self.requests_view,
            "/_mock/stats": self.stats_view,
        }
        view = views.get(path) if method == "GET" else None
        if view is None:
            return await respond(send, 404, wire.error_body(404, f"Unknown control URL: {method} {path}."))
        await respond(send, 200, orjson.dumps(view()))

    async def set_faults(self, raw: bytes, send: Any) -> None:
        try:
            self.faults.replace(orjson.loads(raw))
        except (orjson.JSONDecodeError, FaultError, TypeError) as exc:
            return await respond(send, 400, wire.error_body(400, f"Bad fault table: {exc}"))
        await respond(send, 200, orjson.dumps(self.faults_view()))

    def reset(self, path: str) -> None:
        if path == "/_mock/faults":
            self.faults.clear()
        elif path == "/_mock/requests":
            self.recorded.clear()
        elif path == "/_mock/stats":
            self.stats = Stats(active_streams=self.stats.active_streams)

    def faults_view(self) -> dict:
        return {model: fault.to_json() for model, fault in self.faults.entries.items()}

    def requests_view(self) -> list:
        return [recorded_request(*entry) for entry in self.recorded]

    def stats_view(self) -> dict:
        return vars(self.stats)


def include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def recorded_request(method: str, path: str, headers: list, raw: bytes) -> dict:
    """One recorded request as JSON: header names lower-cased, the body parsed (or null)."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    named = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    return {"method": method, "path": path, "headers": named, "body": body}


def create_app(config: MockConfig | None = None) -> MockUpstream:
    """The mock upstream ASGI app."""
    return MockUpstream(config)


# ---------------------------------------------------------------- running it


def uvicorn_config(app: Any, **where: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
        **where,
    )


def serve(host: str, port: int, config: MockConfig | None = None) -> None:
    """Serve the mock with uvicorn (uvloop, httptools) until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn_config(create_app(config), host=host, port=port)).run()


@dataclass
class RunningMock:
    url: str
    app: MockUpstream


@contextlib.contextmanager
def running(config: MockConfig | None = None, host: str = "127.0.0.1") -> Iterator[RunningMock]:
    """Run the mock in a background thread on a free port; yields its base URL and app."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    app = create_app(config)
    server = uvicorn.Server(uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("mock upstream failed to start")
            time.sleep(0.01)
        yield RunningMock(f"http://{host}:{sock.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--reply")
    args = parser.parse_args(argv)
    config = MockConfig(args.latency_ms, args.chunk_delay_ms, args.api_key, args.reply)
    serve(args.host, args.port, config)


if __name__ == "__main__":
    main()
