"""A loopback OTLP/HTTP sink for benchmarks: accepts POST /v1/traces, /v1/metrics and /v1/logs, reads the
body, discards it, answers 200 with an empty protobuf message. GET /health answers 200; GET /stats tells how
many exports and bytes it took.

Run: `python -m load_tests.otlp_sink --port 4318` (raw ASGI on uvicorn, like the mock upstream).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn

from load_tests.mock_asgi import read_body, respond

EXPORT_PATHS = frozenset({"/v1/traces", "/v1/metrics", "/v1/logs"})
PROTOBUF = [(b"content-type", b"application/x-protobuf"), (b"content-length", b"0")]


class Sink:
    def __init__(self) -> None:
        self.exports: dict[str, int] = {}
        self.bytes = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "POST" and path in EXPORT_PATHS:
            self.bytes += len(await read_body(receive))
            self.exports[path] = self.exports.get(path, 0) + 1
            await send({"type": "http.response.start", "status": 200, "headers": PROTOBUF})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/health":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/stats":
            await respond(send, 200, orjson.dumps({"exports": self.exports, "bytes": self.bytes}))
        else:
            await respond(send, 404, b'{"error":"not found"}')


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    uvicorn.run(Sink(), host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
