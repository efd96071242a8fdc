"""Run `wrk` against one target and parse what it prints: req/s, p50, p99, non-2xx and socket errors.

The request is a small non-streaming chat completion, POSTed by a generated Lua script with
`Content-Type: application/json` and the target's `Authorization` header.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

CHAT_BODY = {
    "model": "mock-model",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 16,
}
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    target: str
    client: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    foreign_cpu: float = float("nan")
    server_cpu: float = float("nan")

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def lua_script(path: Path, authorization: str, body: dict = CHAT_BODY) -> Path:
    """Write the wrk Lua script that POSTs `body` with the given Authorization header."""
    payload = orjson.dumps(body).decode()
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {lua_string(payload)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = {lua_string(authorization)}\n'
    )
    return path


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(url: str, script: Path, concurrency: int, duration: float, core: int) -> str:
    """wrk's output for one run, pinned to `core`; one wrk thread (the core is shared with the mock)."""
    argv = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s"]
    argv += ["--timeout", "5s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def parse(output: str, target: str, client: str, concurrency: int) -> WrkResult:
    """The numbers of one wrk run."""
    latency = {int(p): float(v) * _UNITS_MS[u] for p, v, u in _PERCENTILE.findall(output)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    requests = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = _SOCKET.search(output)
    return WrkResult(
        target=target,
        client=client,
        concurrency=concurrency,
        rps=float(rps.group(1)) if rps else 0.0,
        p50_ms=latency.get(50, float("nan")),
        p99_ms=latency.get(99, float("nan")),
        requests=int(requests.group(1)) if requests else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def measure(
    url: str, script: Path, target: str, client: str, concurrency: int, duration: float, core: int
) -> WrkResult:
    return parse(run_wrk(url, script, concurrency, duration, core), target, client, concurrency)
