"""The audit trail of a running gateway: one row per request whatever its outcome, shipped into the embedded
ClickHouse engine by the shipper process, verifiable, and complete after a kill -9."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import create_key
from tests.servers import MOCK_MODELS, UPSTREAM_SECRET, Mock, Process, free_port, gateway_command, start

GATEWAY_YAML = (
    MOCK_MODELS
    + """\
policies:
  dir: policies
audit:
  spool_dir: spool
"""
)
POLICY = """\
policies:
  - name: main
    rules:
      - {name: no-zebras, kind: terms, terms: [zebra]}
      - {name: lions, kind: terms, terms: [lion], action: warn}
"""


@dataclass
class AuditedGateway:
    folder: Path
    config: Path
    key: str
    process: Process | None = None

    @property
    def url(self) -> str:
        assert self.process is not None
        return self.process.url

    def start(self, *args: str) -> None:
        env = {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET}
        command = ["-m", "gateway", "serve", "--config", str(self.config), *args]
        self.process = start(command, "/healthz", self.folder / "gateway.log", env)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            wait_for_shipper_exit(self.folder)

    def readyz(self) -> dict:
        return httpx.get(self.url + "/readyz", timeout=5).json()  # type: ignore[no-any-return]

    def wait_shipped(self, at_least: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shipper = self.readyz()["audit"]["shipper"] or {}
            if shipper.get("shipped", 0) >= at_least and shipper.get("backlog_segments") == 0:
                return shipper  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise AssertionError(f"not shipped in time: {self.readyz()['audit']}")

    def audit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return gateway_command("audit", *args, "--config", str(self.config))

    def rows(self) -> list[dict]:
        result = self.audit("query", "--limit", "100000", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]


def wait_for_shipper_exit(folder: Path, timeout: float = 20) -> None:
    """The embedded engine allows one process per data directory: wait until the shipper let it go."""
    status = folder / "spool" / "shipper.json"
    if not status.exists():
        return
    pid = json.loads(status.read_text())["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the shipper (pid {pid}) did not exit")


@pytest.fixture
def audited(mock: Mock, tmp_path: Path) -> Iterator[AuditedGateway]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "main.yaml").write_text(POLICY)
    config = tmp_path / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url))
    gateway = AuditedGateway(tmp_path, config, create_key(config, "--team", "research", "--name", "bot"))
    try:
        yield gateway
    finally:
        gateway.stop()


def test_every_request_gets_exactly_one_row_whatever_its_outcome(audited: AuditedGateway, upstream: Mock) -> None:
    audited.start()
    with openai.OpenAI(base_url=audited.url + "/v1", api_key=audited.key, max_retries=0) as sdk:
        sdk.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "hello"}], user="u-1")
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "a zebra"}])
        sdk.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "a lion"}])
        stream = sdk.chat.completions.create(
            model="mock-model",
            messages=[{"role": "user", "content": "s"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        list(stream)
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with openai.OpenAI(base_url=audited.url + "/v1", api_key="gk-000000000000.bad", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "x"}])
    audited.wait_shipped(6)
    audited.stop()
    rows = sorted(audited.rows(), key=lambda row: row["seq"])
    assert [row["status"] for row in rows] == [200, 400, 200, 200, 404, 401]
    ok, blocked, warned, streamed, _unknown, unauthenticated = rows
    assert (ok["team"], ok["key_name"], ok["end_user"], ok["model_requested"]) == (
        "research",
        "bot",
        "u-1",
        "mock-model",
    )
    assert ok["tokens_in"] > 0 and ok["deployment"] and ok["attempts"] == 1 and ok["prompt_hash"]
    assert blocked["error_code"] == "policy_violation" and blocked["attempts"] == 0
    assert [d["rule"] for d in blocked["decisions"]] == ["no-zebras"] and "zebra" in str(blocked["decisions"])
    assert [(d["action"], d["where"]) for d in warned["decisions"]] == [("warn", "input"), ("warn", "output")]
    assert streamed["stream"] is True and streamed["answer_hash"] and streamed["ttft_ms"] > 0
    assert streamed["tokens_out"] > 0  # from the usage chunk
    assert unauthenticated["team"] == "" and unauthenticated["error_code"] == "invalid_api_key"
    assert len({row["event_id"] for row in rows}) == 6
    assert "hello" not in json.dumps(rows, default=str)  # no prompt text, only its keyed hash
    verify = audited.audit("verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok: 6 rows"), verify.stdout + verify.stderr


def test_a_kill_9_under_load_loses_no_answered_request(audited: AuditedGateway, upstream: Mock) -> None:
    audited.start()
    answered: list[str] = []
    stop = time.monotonic() + 2.0
    with httpx.Client(base_url=audited.url, timeout=10) as http:
        while time.monotonic() < stop:
            response = http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {audited.key}"},
                json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            if response.status_code == 200:
                answered.append(response.headers["x-request-id"])
    assert audited.process is not None
    children = [p for p in _children(audited.process.proc.pid)]
    os.kill(audited.process.proc.pid, signal.SIGKILL)  # the server; its shipper child goes too
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    audited.process.proc.wait()
    wait_for_shipper_exit(audited.folder)
    audited.start()  # the new shipper ships what the dead workers left in the spool
    audited.wait_shipped(0)
    deadline = time.monotonic() + 20
    while (audited.readyz()["audit"]["shipper"] or {}).get("backlog_segments") != 0 or _spooled(audited.folder):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    audited.stop()
    rows = audited.rows()
    ids = [row["request_id"] for row in rows]
    assert len(answered) > 50
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} answered requests have no row"
    assert len(ids) == len(set(ids)), "a request has two rows"
    assert audited.audit("verify").returncode == 0


def _children(pid: int) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(pid).children(recursive=True)]


def _spooled(folder: Path) -> list[Path]:
    """The spool's segments holding events (one the shipper removes while this looks is not counted)."""
    found = []
    for path in (folder / "spool").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.suffix in (".seg", ".open") and path.stat().st_size > 0:
                found.append(path)
    return found


def test_readyz_reports_the_spool_and_the_shipper(audited: AuditedGateway) -> None:
    audited.start()
    audited.wait_shipped(0)
    audit = audited.readyz()["audit"]
    assert audit["lost"] == 0 and audit["shipper"]["state"] == "ok" and "appended" in json.dumps(audit["spool"])


def test_the_embedded_engine_loads_only_in_the_shipper(audited: AuditedGateway) -> None:
    import psutil

    audited.start()
    audited.wait_shipped(0)
    assert audited.process is not None
    server = psutil.Process(audited.process.proc.pid)
    assert not any("chdb" in m.path for m in server.memory_maps())
    shipper = [c for c in server.children() if "ship" in " ".join(c.cmdline())]
    assert len(shipper) == 1 and any("chdb" in m.path for m in shipper[0].memory_maps())


def test_operators_read_the_trail_while_the_gateway_runs(audited: AuditedGateway) -> None:
    """The embedded engine is held by the running shipper: the audit commands read through it."""
    audited.start()
    client = openai.OpenAI(base_url=audited.url + "/v1", api_key=audited.key, max_retries=0)
    for n in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {n}"}])
    audited.wait_shipped(3)
    assert [row["status"] for row in audited.rows()] == [200, 200, 200]
    tail = audited.audit("tail", "-n", "2")
    assert tail.returncode == 0 and tail.stdout.count("chat/completions") == 2, tail.stderr
    verify = audited.audit("verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok: 3 rows"), verify.stdout + verify.stderr


def test_the_read_socket_refuses_writes_and_is_the_owners_only(audited: AuditedGateway) -> None:
    from gateway.audit.reads import ReadError, RemoteReader, socket_path

    audited.start()
    audited.wait_shipped(0)
    path = socket_path(audited.folder / "spool")
    assert path.stat().st_mode & 0o777 == 0o600
    reader = RemoteReader(path, timeout=10)
    assert reader.select("SELECT count() FROM gateway.audit_events") == [[0]]
    with pytest.raises(ReadError, match="readonly"):
        reader.select("INSERT INTO gateway.audit_events (event_id) VALUES (generateUUIDv4())")
    with pytest.raises(ReadError, match="unknown read"):
        reader._call("drop")


def test_audit_commands_explain_a_store_nobody_answers_for(audited: AuditedGateway, tmp_path: Path) -> None:
    """A store held by a process that serves no reads (a shipper run by hand, without its socket): exit 2, why."""
    audited.start()
    audited.wait_shipped(0)
    (audited.folder / "spool" / "shipper.sock").unlink()
    result = audited.audit("tail")
    assert result.returncode == 2 and "shipper" in result.stderr and "Traceback" not in result.stderr


def test_a_sink_down_for_30_seconds_loses_nothing(audited: AuditedGateway) -> None:
    audited.config.write_text(audited.config.read_text() + "  run_shipper: false\n")
    audited.start()
    shipper = subprocess.Popen(
        [sys.executable, "-m", "tests.faulty_shipper", "--config", str(audited.config), "--fail-for", "30"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while audited.readyz()["audit"]["shipper"] is None:  # until the shipper has opened the store
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answered: list[str] = []
        backlog_seen = 0
        started = time.monotonic()
        with httpx.Client(base_url=audited.url, timeout=10) as http:
            while time.monotonic() - started < 30:
                response = http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {audited.key}"},
                    json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert response.status_code == 200
                answered.append(response.headers["x-request-id"])
                if len(answered) % 50 == 0:
                    audit = audited.readyz()["audit"]
                    backlog_seen = max(backlog_seen, audit["spool"]["spool_bytes"])
                    assert audit["shipper"]["state"] == "error" and "injected fault" in audit["shipper"]["last_error"]
                time.sleep(0.01)
        assert backlog_seen > 0
        deadline = time.monotonic() + 60
        while _spooled(audited.folder) or (audited.readyz()["audit"]["shipper"] or {}).get("state") != "ok":
            assert time.monotonic() < deadline, "the backlog did not drain after the sink came back"
            time.sleep(0.2)
    finally:
        assert shipper.stdin is not None
        shipper.stdin.close()
        shipper.wait(30)
    audited.stop()
    ids = [row["request_id"] for row in audited.rows()]
    assert set(answered) <= set(ids) and len(ids) == len(set(ids))
    assert audited.audit("verify").returncode == 0


def test_a_clickhouse_server_that_refuses_connections_loses_nothing(audited: AuditedGateway) -> None:
    """The sink is a server URL on a closed loopback port: requests are served, /readyz shows the backlog and
    the shipper's error; once the store is reachable again (here: the gateway restarted on the embedded
    engine), every answered request arrives exactly once."""
    embedded = audited.config.read_text()
    audited.config.write_text(embedded + f"  clickhouse_url: http://127.0.0.1:{free_port()}\n")
    audited.start()
    answered: list[str] = []
    with httpx.Client(base_url=audited.url, timeout=10) as http:
        started = time.monotonic()
        while time.monotonic() - started < 8:
            response = http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {audited.key}"},
                json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
            answered.append(response.headers["x-request-id"])
            time.sleep(0.01)
    audit = audited.readyz()["audit"]
    assert audit["shipper"]["state"] == "error" and "127.0.0.1" in audit["shipper"]["last_error"]
    assert audit["spool"]["spool_bytes"] > 0 and audit["lost"] == 0
    audited.stop()
    audited.config.write_text(embedded)
    audited.start()
    audited.wait_shipped(len(answered))
    audited.stop()
    ids = [row["request_id"] for row in audited.rows()]
    assert sorted(ids) == sorted(answered) and audited.audit("verify").returncode == 0


def test_four_workers_share_one_shipper_and_lose_nothing(audited: AuditedGateway) -> None:
    audited.start("--workers", "4")
    answered = []
    with httpx.Client(base_url=audited.url, timeout=10) as http:
        for _ in range(200):
            response = http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {audited.key}", "connection": "close"},
                json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
            answered.append(response.headers["x-request-id"])
    audited.wait_shipped(200)
    audited.stop()
    rows = audited.rows()
    assert sorted(row["request_id"] for row in rows) == sorted(answered)
    assert "lock" not in (audited.folder / "gateway.log").read_text().lower()


TAMPER = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
client.command(sys.argv[2], settings={"mutations_sync": 2})
"""


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("ALTER TABLE gateway.audit_events UPDATE status = 204 WHERE seq = 3", "seq 3"),
        ("ALTER TABLE gateway.audit_events DELETE WHERE seq = 2", "seq 2"),
        (
            "INSERT INTO gateway.audit_events (seq, event_id, team, status, prev_hash, hash, ts) "
            "SELECT 3, generateUUIDv4(), 'forged', 200, prev_hash, hash, ts FROM gateway.audit_events WHERE seq = 3",
            "seq 3",
        ),
    ],
)
def test_verify_names_the_row_that_was_altered_removed_or_inserted(
    audited: AuditedGateway, statement: str, expected: str
) -> None:
    audited.start()
    with httpx.Client(base_url=audited.url, timeout=10) as http:
        for _ in range(5):
            http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {audited.key}"},
                json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
            )
    audited.wait_shipped(5)
    audited.stop()
    assert audited.audit("verify").returncode == 0
    dsn = f"chdb://{audited.folder / 'audit-db'}"
    done = subprocess.run([sys.executable, "-c", TAMPER, dsn, statement], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    verify = audited.audit("verify")
    assert verify.returncode == 1 and verify.stdout.startswith("FAILED"), verify.stdout + verify.stderr
    assert expected in verify.stdout, verify.stdout


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_full_spool_refuses_or_counts_the_loss_as_configured(audited: AuditedGateway, policy: str) -> None:
    extra = f"  run_shipper: false\n  max_spool_bytes: 1048576\n  on_spool_full: {policy}\n"
    audited.config.write_text(audited.config.read_text() + extra)
    audited.start()
    statuses: list[int] = []
    unexpected: list[str] = []
    with httpx.Client(base_url=audited.url, timeout=10) as http:
        for _ in range(2500):  # about 1.1 KB of spool each: past the 1 MiB budget with nobody shipping
            response = http.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {audited.key}"},
                json={"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]},
            )
            statuses.append(response.status_code)
            if response.status_code not in (200, 503):  # seen once (a 400) in a full run: say what it was
                unexpected.append(f"{response.status_code} {response.text[:300]}")
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "audit_unavailable"
                break
    audit = audited.readyz()["audit"]
    if policy == "fail_closed":
        assert statuses[-1] == 503 and set(statuses[:-1]) == {200}, unexpected
        assert audit["spool"]["full"] is True
    else:
        assert set(statuses) == {200} and audit["lost"] > 0, unexpected
