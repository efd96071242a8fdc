"""`gateway audit ship` as a child process of `gateway serve` (this module imports no ClickHouse client)."""

import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from gateway import codec

log = logging.getLogger("gateway.audit.shipper")
STATUS_FILE = "shipper.json"


def read_status(directory: Path) -> dict[str, Any] | None:
    """What the shipper last wrote about itself (None before its first report)."""
    try:
        status = codec.loads((directory / STATUS_FILE).read_bytes())
    except (OSError, codec.JSONDecodeError):
        return None
    return status if isinstance(status, dict) else None


class ShipperProcess:
    """`gateway audit ship` as a child of `gateway serve`: started before the workers, restarted if it dies,
    stopped when the server stops (its stdin closes; SIGKILL if it has not finished after `grace` seconds)."""

    def __init__(self, config: str, grace: float = 15.0) -> None:
        self.argv = [sys.executable, "-m", "gateway", "audit", "ship", "--config", config, "--until-stdin-closes"]
        self.grace = grace
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._keep_running, name="audit-shipper-watch", daemon=True)

    def __enter__(self) -> "ShipperProcess":
        self.process = self._spawn()
        self._watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _keep_running(self) -> None:
        while not self._stopping.wait(1.0):
            if self.process is not None and self.process.poll() is not None and not self._stopping.is_set():
                log.error("the audit shipper exited with %s; restarting it", self.process.returncode)
                self.process = self._spawn()

    def _spawn(self) -> "subprocess.Popen[bytes]":
        # The shipper stops when its stdin reaches end of file: when this process closes the pipe, or dies
        # (even by SIGKILL). Signals alone are not enough: the embedded engine installs its own handlers.
        return subprocess.Popen(self.argv, stdin=subprocess.PIPE)
