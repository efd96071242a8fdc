"""Stored audit bodies seen from outside: a running gateway with a PII policy and `audit.bodies: true`, used
through the official openai SDK, read back with `gateway audit body`, erased with `gateway audit shred`.

The audit table holds neither prompt text nor raw personal data; a body read back holds the placeholders the
upstream received (the client still got the real values); a team's bodies become unreadable when its key is
shredded, the other teams' stay readable, and `gateway audit verify` still passes; a running gateway notices
a shredded key and seals the next bodies with a new one."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.secrets import generate_master_key
from tests.conftest import MADE_UP_EMAIL, MADE_UP_PHONE, create_key
from tests.integration.test_audit_trail import AuditedGateway
from tests.servers import MOCK_MODELS, UPSTREAM_SECRET, Mock

GATEWAY_YAML = (
    MOCK_MODELS
    + """\
policies:
  dir: policies
pii:
  spacy_model: null
  processes: 1
  timeout: 5
audit:
  spool_dir: spool
  bodies: {bodies}
"""
)
POLICY = """\
policies:
  - name: privacy
    rules:
      - name: personal-data
        kind: pii
        entities: {EMAIL_ADDRESS: pseudonymise, CREDIT_CARD: block}
"""
EMAIL = "alice.martin@example.com"
CARD = "4111 1111 1111 1111"


class BodiesGateway(AuditedGateway):
    beta_key: str = ""

    def start_ready(self) -> None:
        """Start, and wait for the PII analyzer pool (requests before it is ready would wait for it)."""
        self.start()
        deadline = time.monotonic() + 60
        while not self.readyz()["pii"]["ready"]:
            assert time.monotonic() < deadline, "the PII analyzer did not start"
            time.sleep(0.1)

    def chat(self, key: str, text: str) -> tuple[str, str]:
        """(x-request-id, the answer's text as the client got it)."""
        with openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="mock-model", messages=[{"role": "user", "content": text}]
            )
        return raw.headers["x-request-id"], raw.parse().choices[0].message.content or ""

    def stream(self, key: str, text: str) -> tuple[str, str]:
        with openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=30) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="mock-model", messages=[{"role": "user", "content": text}], stream=True
            )
            got = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        return raw.headers["x-request-id"], got

    def body(self, row: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.audit("body", row["event_id"])


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = generate_master_key()
    monkeypatch.setenv("GATEWAY_MASTER_KEY", key)  # for the gateway and for `gateway audit body`
    return key


def make_gateway(folder: Path, mock: Mock, bodies: bool, policy: str = POLICY) -> BodiesGateway:
    (folder / "policies").mkdir()
    (folder / "policies" / "privacy.yaml").write_text(policy)
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url, bodies=str(bodies).lower()))
    gateway = BodiesGateway(folder, config, create_key(config, "--team", "alpha"))
    gateway.beta_key = create_key(config, "--team", "beta")
    return gateway


@pytest.fixture
def with_bodies(mock: Mock, tmp_path: Path, master_key: str) -> Iterator[BodiesGateway]:
    gateway = make_gateway(tmp_path, mock, bodies=True)
    try:
        yield gateway
    finally:
        gateway.stop()


def by_request(gateway: BodiesGateway) -> dict[str, dict[str, Any]]:
    return {row["request_id"]: row for row in gateway.rows()}


def shown(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_bodies_are_stored_redacted_and_shredding_a_team_erases_only_its_bodies(
    with_bodies: BodiesGateway, upstream: Mock
) -> None:
    gateway = with_bodies
    gateway.start_ready()
    served, answer = gateway.chat(gateway.key, f"Please mail {EMAIL} about the zanzibar invoice")
    assert answer == f"Echo: Please mail {EMAIL} about the zanzibar invoice"  # restored for the client
    streamed, text = gateway.stream(gateway.beta_key, f"Tell {EMAIL} the quokka report is late")
    assert text == f"Echo: Tell {EMAIL} the quokka report is late"
    with pytest.raises(openai.BadRequestError) as blocked:
        gateway.chat(gateway.key, f"Charge {CARD} and mail {EMAIL} the wombat receipt")
    refused = blocked.value.response.headers["x-request-id"]
    gateway.wait_shipped(3)
    gateway.stop()

    rows = by_request(gateway)
    table = json.dumps(list(rows.values()))
    for secret in (EMAIL, "alice", CARD, "4111", "zanzibar", "quokka", "wombat", "EMAIL_ADDRESS_1"):
        assert secret not in table  # the raw table: no prompt text, no raw value, not even a placeholder
    assert all(json.loads(row["body"])["v"] == 1 for row in rows.values())

    alpha = shown(gateway.body(rows[served]))
    request = alpha["request"]["messages"][0]["content"]
    assert request == "Please mail <EMAIL_ADDRESS_1> about the zanzibar invoice"  # what the upstream received
    assert alpha["answer"]["choices"][0]["message"]["content"] == "Echo: " + request  # before restoration
    assert alpha["team"] == "alpha" and EMAIL not in json.dumps(alpha)
    beta = shown(gateway.body(rows[streamed]))
    assert beta["stream"] == {"0:content": "Echo: Tell <EMAIL_ADDRESS_1> the quokka report is late"}
    assert EMAIL not in json.dumps(beta)
    left_out = gateway.body(rows[refused])
    assert left_out.returncode == 1 and "never reached an upstream" in left_out.stderr
    assert CARD not in left_out.stdout + left_out.stderr

    shredded = gateway.audit("shred", "--team", "alpha")
    assert shredded.returncode == 0 and shredded.stdout.startswith("destroyed 1 key(s) of team 'alpha'")
    gone = gateway.body(rows[served])
    assert gone.returncode == 1 and gone.stderr.strip() == "unreadable: the team's key was shredded"
    assert "quokka" in shown(gateway.body(rows[streamed]))["stream"]["0:content"]  # team beta: still readable
    verify = gateway.audit("verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok: 3 rows"), verify.stdout + verify.stderr


def test_a_running_gateway_notices_a_shredded_key_and_seals_new_bodies_with_a_new_one(
    with_bodies: BodiesGateway, upstream: Mock
) -> None:
    gateway = with_bodies
    gateway.start_ready()
    before, _ = gateway.chat(gateway.key, "first zanzibar note")
    shredded = gateway.audit("shred", "--team", "alpha")  # while the gateway runs: its worker has the key
    assert shredded.returncode == 0 and "destroyed 1 key(s)" in shredded.stdout
    time.sleep(1.3)  # a worker looks at its team keys on disk at most a second apart
    after, _ = gateway.chat(gateway.key, "second zanzibar note")
    gateway.wait_shipped(2)
    gateway.stop()
    rows = by_request(gateway)
    gone = gateway.body(rows[before])
    assert gone.returncode == 1 and "unreadable: the team's key was shredded" in gone.stderr
    assert shown(gateway.body(rows[after]))["request"]["messages"][0]["content"] == "second zanzibar note"
    assert [p.suffix for p in (gateway.folder / "audit-body-keys").iterdir()] == [".key"]
    assert gateway.audit("verify").returncode == 0


def test_values_the_model_made_up_are_masked_in_the_stored_answer_and_counted(
    chatty: Mock, tmp_path: Path, master_key: str
) -> None:
    policy = POLICY.replace("CREDIT_CARD: block}", "PHONE_NUMBER: mask}\n        output: mask")
    gateway = make_gateway(tmp_path, chatty, bodies=True, policy=policy)
    try:
        gateway.start_ready()
        served, answer = gateway.chat(gateway.key, "who handles the zanzibar account?")
        streamed, text = gateway.stream(gateway.key, "who handles the quokka account?")
        gateway.wait_shipped(2)
    finally:
        gateway.stop()
    for got in (answer, text):
        assert MADE_UP_EMAIL not in got and MADE_UP_PHONE not in got
        assert "<EMAIL_ADDRESS>" in got and "<PHONE_NUMBER>" in got
    rows = by_request(gateway)
    stored = json.dumps([shown(gateway.body(rows[served])), shown(gateway.body(rows[streamed]))])
    assert MADE_UP_EMAIL not in stored and MADE_UP_PHONE not in stored and "<PHONE_NUMBER>" in stored
    for request_id in (served, streamed):
        counted = {(item["entity"], item["action"]): item["count"] for item in rows[request_id]["pii"]}
        assert counted == {("EMAIL_ADDRESS", "output_mask"): 1, ("PHONE_NUMBER", "output_mask"): 1}


def test_with_bodies_off_the_body_column_stays_empty(mock: Mock, tmp_path: Path, upstream: Mock) -> None:
    gateway = make_gateway(tmp_path, mock, bodies=False)
    try:
        gateway.start_ready()
        request_id, _ = gateway.chat(gateway.key, f"mail {EMAIL} the zanzibar invoice")
        gateway.wait_shipped(1)
    finally:
        gateway.stop()
    row = by_request(gateway)[request_id]
    assert row["body"] == "" and row["status"] == 200
    assert not (tmp_path / "audit-body-keys").exists()


def test_the_gateway_refuses_to_start_with_bodies_on_and_no_master_key(mock: Mock, tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, mock, bodies=True)
    env = {name: value for name, value in os.environ.items() if name != "GATEWAY_MASTER_KEY"}
    env["TEST_UPSTREAM_KEY"] = UPSTREAM_SECRET
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(gateway.config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "audit.bodies is true" in result.stderr and "GATEWAY_MASTER_KEY is not set" in result.stderr
