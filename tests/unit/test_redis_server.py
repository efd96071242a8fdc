"""The test Redis: a real redis-server that keeps its keys across a restart and is stopped by its PID."""

import os
from pathlib import Path

from tests.redis_server import start_redis


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_keys_survive_a_restart_and_stop_ends_the_process(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        port = server.port
        with server.client() as client:
            assert client.set("gateway:test", "kept")
        server.restart(down_seconds=0.1)
        assert server.port == port
        with server.client() as client:
            assert client.get("gateway:test") == b"kept"
        assert server.proc is not None
        pid = server.proc.pid
    finally:
        server.stop()
    assert server.proc is None
    assert not pid_alive(pid)
