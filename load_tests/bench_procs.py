"""Server processes for the benchmark: start pinned to a core, wait until ready, read RSS, stop by PID.

Every process is started in its own session (process group = its PID) so that stopping it also stops any
children it spawned; stopping is SIGTERM, then SIGKILL after a timeout. Output goes to a log file whose
tail is shown when a process fails to come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One started server process and what we know about it."""

    name: str
    popen: subprocess.Popen
    log: Path
    url: str
    rss_kb: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def note_rss(self, label: str) -> None:
        self.rss_kb[label] = rss_kb(self.pid)


def start(name: str, argv: list[str], core: int, url: str, log_dir: Path, env: dict | None = None) -> Server:
    """Start `argv` pinned to `core`, output to `<log_dir>/<name>.log`."""
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Server(name, popen, log, url)


def start_redis(core: int, log_dir: Path) -> Server:
    """A redis-server on a free loopback port, without persistence, pinned to `core`, answering PING."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = start("redis", argv, core, f"redis://127.0.0.1:{port}/0", log_dir)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False).returncode:
        if time.monotonic() > deadline or server.popen.poll() is not None:
            stop(server)
            raise RuntimeError(f"redis-server did not start:\n{server.log_tail()}")
        time.sleep(0.05)
    return server


def probe(url: str, body: bytes | None, headers: dict) -> int | None:
    """HTTP status of one request, or None if nothing answered."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def wait_ready(
    server: Server, path: str, timeout: float = 30, body: bytes | None = None, headers: dict | None = None
) -> None:
    """Poll `server.url + path` until it answers 200; raise with the log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.popen.returncode}:\n{server.log_tail()}")
        if probe(server.url + path, body, headers or {}) == 200:
            server.note_rss("idle")
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout}s:\n{server.log_tail()}")


def stop(server: Server, timeout: float = 5) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not exited after `timeout` seconds."""
    if server.popen.poll() is not None:
        return
    with_group(server.pid, signal.SIGTERM)
    try:
        server.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with_group(server.pid, signal.SIGKILL)
        server.popen.wait(timeout)


def with_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` plus its descendants, in kB (0 if gone)."""
    total = 0
    for one in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def descendants(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children + [d for c in children for d in descendants(c)]
