"""Real servers for the tests: the mock upstream and the gateway, each a child process on a free loopback port.

Each is started with the same commands a user types (`python -m load_tests.mock_upstream`,
`python -m gateway serve`), waited for until it answers, and stopped by its own PID.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

UPSTREAM_SECRET = "sk-upstream-secret-0123456789"
# The models every test gateway serves from the mock (a gateway.yaml fragment; format it with mock=<url>).
MOCK_MODELS = """\
models:
  - name: mock-model
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
  - name: gpt-4o-mini
    provider: openai
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(args: list[str], ready_path: str, log: Path, env: dict[str, str] | None = None) -> Process:
    port = free_port()
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, *args, "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    process = Process(proc, url, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited with {proc.returncode}:\n{process.output()}")
        try:
            if httpx.get(url + ready_path, timeout=1).status_code < 500:
                return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"{args} did not become ready:\n{process.output()}")


@dataclass
class Mock:
    process: Process
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5))

    @property
    def url(self) -> str:
        return self.process.url

    def faults(self, table: dict[str, Any]) -> None:
        self.client.post(self.url + "/_mock/faults", json=table).raise_for_status()

    def reset(self) -> None:
        for path in ("/_mock/faults", "/_mock/requests", "/_mock/stats"):
            self.client.delete(self.url + path).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self.client.get(self.url + "/_mock/requests").json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return self.client.get(self.url + "/_mock/stats").json()  # type: ignore[no-any-return]


def gateway_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, check=False
    )
