"""Stored audit bodies: what a request stores (redacted request, answer before PII restoration, cut at the
limit, nothing when it may hold raw PII), sealed per team and event, team keys made once by racing workers,
wrapped under the master key, noticed when shredded, and unreadable after `shred`."""

import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import codec
from gateway.audit import event
from gateway.audit.bodies import Bodies, NoBody, Shredded, Unreadable, reveal
from gateway.audit.keyring import Keyring, KeyringError, shred, team_tag
from gateway.audit.stage import KeepAnswer
from gateway.auth.keys import Principal
from gateway.pii.stage import RestorePii
from gateway.pii.vault import Vault
from gateway.pipeline import RequestContext, Result
from gateway.policy.engine import Decision

ROOT = Path(__file__).resolve().parents[3]
MASTER = bytes(range(32))
EMAIL = "alice.martin@example.com"
PROMPT = "Please write to <EMAIL_ADDRESS_1> about the zanzibar invoice"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit-body-keys"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keyring(keys_dir: Path, clock: Clock) -> Keyring:
    return Keyring(keys_dir, MASTER, clock=clock)


def context(team: str = "alpha", prompt: str = PROMPT, attempts: int = 1) -> RequestContext:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    ctx = RequestContext(uuid.uuid4().hex, "chat/completions", {}, codec.dumps(body), body, "gk-x")
    ctx.principal = Principal("k1", team, "bot", None)
    ctx.attempts = attempts
    return ctx


def answer(text: str) -> bytes:
    return codec.dumps(
        {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}
    )


def sealed(bodies: Bodies, ctx: RequestContext) -> tuple[str, str]:
    """(event id, body column) of the request's audit event."""
    row = event.build(ctx, b"s" * 32, bodies)
    return row["event_id"], row["body"]


def test_a_sealed_body_opens_in_another_process_and_the_column_holds_no_plaintext(keyring: Keyring) -> None:
    event_id, column = sealed(Bodies(keyring, 65536), context())
    assert "zanzibar" not in column and "EMAIL_ADDRESS" not in column
    assert set(codec.loads(column)) == {"v", "kid", "nonce", "ct"}
    elsewhere = Keyring(keyring.directory, MASTER)  # another worker, or the CLI
    document = reveal(elsewhere, column, event_id, "alpha")
    assert codec.loads(document["request"])["messages"][0]["content"] == PROMPT
    assert document["truncated"] is False


def test_a_body_copied_to_another_event_or_team_does_not_open(keyring: Keyring) -> None:
    bodies = Bodies(keyring, 65536)
    event_id, column = sealed(bodies, context("alpha"))
    sealed(bodies, context("beta"))
    with pytest.raises(Unreadable, match="does not authenticate") as moved:
        reveal(keyring, column, str(uuid.uuid4()), "alpha")
    assert not isinstance(moved.value, Shredded)
    with pytest.raises(Unreadable):
        reveal(keyring, column, event_id, "beta")


def test_the_team_key_file_is_private_and_holds_the_key_only_wrapped_under_the_master_key(
    keyring: Keyring, keys_dir: Path
) -> None:
    key = keyring.current("alpha")
    path = keys_dir / f"{team_tag('alpha')}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = codec.loads(path.read_bytes())
    assert record["kid"] == key.kid and record["team"] == "alpha" and set(record) >= {"wrapped", "created"}
    with pytest.raises(KeyringError, match="another GATEWAY_MASTER_KEY"):
        Keyring(keys_dir, bytes(32)).current("alpha")
    os.rename(path, keys_dir / f"{team_tag('beta')}.key")  # a key file passed off as another team's
    with pytest.raises(KeyringError, match="not a body key of this team"):
        Keyring(keys_dir, MASTER).current("beta")


RACER = """
import sys, time
from pathlib import Path
from gateway.audit.keyring import Keyring
start = float(sys.argv[2])
while time.time() < start:
    pass
print(Keyring(Path(sys.argv[1]), bytes(range(32))).current("alpha").kid)
"""


def test_workers_racing_to_make_a_teams_key_all_use_the_one_that_landed(keys_dir: Path) -> None:
    start = time.time() + 1.5  # every racer is up and spinning before the start
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(keys_dir), str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    kids = {racer.communicate(timeout=60)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(kids) == 1 and "" not in kids
    assert [p.name for p in keys_dir.iterdir()] == [f"{team_tag('alpha')}.key"]  # no temporary file left


def test_shredding_a_team_makes_its_bodies_unreadable_and_spares_the_other_teams(
    keyring: Keyring, keys_dir: Path
) -> None:
    bodies = Bodies(keyring, 65536)
    alpha_id, alpha = sealed(bodies, context("alpha"))
    beta_id, beta = sealed(bodies, context("beta"))
    assert shred(keys_dir, "alpha") == 1
    assert not (keys_dir / f"{team_tag('alpha')}.key").exists()
    fresh = Keyring(keys_dir, MASTER)
    with pytest.raises(Shredded, match=r"^the team's key was shredded$"):
        reveal(fresh, alpha, alpha_id, "alpha")
    assert "zanzibar" in reveal(fresh, beta, beta_id, "beta")["request"]
    assert shred(keys_dir, "alpha") == 0
    assert shred(keys_dir.parent / "never-made", "alpha") == 0


def test_a_worker_notices_a_shredded_key_within_a_second_and_seals_new_bodies_with_a_new_key(
    keyring: Keyring, keys_dir: Path, clock: Clock
) -> None:
    bodies = Bodies(keyring, 65536)
    old_id, old = sealed(bodies, context("alpha"))
    first = keyring.current("alpha")
    shred(keys_dir, "alpha")
    clock.now += 0.5
    assert keyring.current("alpha") is first  # cached: the file is not read on every request
    clock.now += 0.6
    second = keyring.current("alpha")
    assert second.kid != first.kid
    new_id, new = sealed(bodies, context("alpha"))
    reader = Keyring(keys_dir, MASTER)
    assert "zanzibar" in reveal(reader, new, new_id, "alpha")["request"]
    with pytest.raises(Shredded):
        reveal(reader, old, old_id, "alpha")


def test_a_key_replaced_by_another_worker_is_picked_up(keyring: Keyring, keys_dir: Path, clock: Clock) -> None:
    first = keyring.current("alpha")
    shred(keys_dir, "alpha")
    other = Keyring(keys_dir, MASTER).current("alpha")  # another worker noticed first and made the new key
    clock.now += 1.1
    assert keyring.current("alpha").kid == other.kid != first.kid


async def test_the_answer_is_stored_before_pii_restoration_and_the_client_gets_the_real_value(
    keyring: Keyring,
) -> None:
    ctx = context()
    vault = Vault()
    placeholder = vault.placeholder("EMAIL_ADDRESS", EMAIL)
    ctx.vault = vault
    ctx.result = Result(200, {}, answer(f"Sure, I will write to {placeholder}."))
    await KeepAnswer(65536)(ctx)
    await RestorePii()(ctx)
    assert isinstance(ctx.result.body, bytes) and EMAIL.encode() in ctx.result.body
    event_id, column = sealed(Bodies(keyring, 65536), ctx)
    document = reveal(keyring, column, event_id, "alpha")
    stored = document["request"] + document["answer"]
    assert stored.count(placeholder) == 2 and EMAIL not in stored
    assert document["stream"] is None


def sse(texts: list[str]) -> list[bytes]:
    events = [{"choices": [{"index": 0, "delta": {"content": text}}]} for text in texts]
    return [b"data: " + codec.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


async def chunks(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def streamed(ctx: RequestContext, pieces: list[bytes], limit: int = 65536) -> bytes:
    ctx.result = Result(200, {}, chunks(pieces))
    await KeepAnswer(limit)(ctx)
    await RestorePii()(ctx)
    assert not isinstance(ctx.result.body, bytes)
    return b"".join([piece async for piece in ctx.result.body])


async def test_a_stream_stores_its_text_with_the_placeholders_the_upstream_sent(keyring: Keyring) -> None:
    ctx = context()
    vault = Vault()
    vault.placeholder("EMAIL_ADDRESS", EMAIL)
    ctx.vault = vault
    wire = b"".join(sse(["Writing to <EMAIL_", "ADDRESS_1> now", "."]))
    client_got = await streamed(ctx, [wire[:17], wire[17:70], wire[70:]])  # cut anywhere, events too
    assert EMAIL.encode() in client_got
    event_id, column = sealed(Bodies(keyring, 65536), ctx)
    document = reveal(keyring, column, event_id, "alpha")
    assert document["stream"] == {"0:content": "Writing to <EMAIL_ADDRESS_1> now."}
    assert document["answer"] is None and document["truncated"] is False


async def test_a_long_stream_is_kept_up_to_the_limit_and_marked_truncated(keyring: Keyring) -> None:
    ctx = context()
    await streamed(ctx, sse(["é" * 100] * 40), limit=1024)  # 8000 bytes of text
    event_id, column = sealed(Bodies(keyring, 1024), ctx)
    document = reveal(keyring, column, event_id, "alpha")
    text = document["stream"]["0:content"]
    assert len(text.encode()) == 1024 and set(text) == {"é"}
    assert document["truncated"] is True


async def test_a_long_request_and_answer_are_cut_at_max_body_bytes_and_marked_truncated(keyring: Keyring) -> None:
    ctx = context(prompt="ü" * 3000)
    ctx.result = Result(200, {}, answer("ok " * 2000))
    await KeepAnswer(1024)(ctx)
    event_id, column = sealed(Bodies(keyring, 1024), ctx)
    document = reveal(keyring, column, event_id, "alpha")
    assert document["truncated"] is True
    assert 1022 <= len(document["request"].encode()) <= 1024  # cut on a character boundary
    assert document["request"].startswith('{"model":"m"') and len(document["answer"]) == 1024


def test_nothing_is_stored_for_a_request_that_was_blocked_or_refused_before_the_upstream(keyring: Keyring) -> None:
    bodies = Bodies(keyring, 65536)
    blocked = context(prompt=f"my card is 4111 1111 1111 1111, mail {EMAIL}", attempts=0)
    event_id, column = sealed(bodies, blocked)
    assert codec.loads(column) == {"v": 1, "omitted": "not_forwarded"}
    with pytest.raises(NoBody, match="never reached an upstream"):
        reveal(keyring, column, event_id, "alpha")
    alert = RequestContext("alert-1", "gateway/budget_threshold", {}, b"", {}, None)
    assert event.build(alert, b"s" * 32, bodies)["body"] == ""
    assert list(keyring.directory.glob("*")) == []  # no key was even made


@pytest.mark.parametrize(
    ("kind", "action", "where"),
    [("pii", "shadow", "input"), ("secrets", "warn", "input"), ("secrets", "redact", "output")],
)
def test_nothing_is_stored_when_a_rule_left_pii_or_a_secret_in_place(
    keyring: Keyring, kind: str, action: str, where: str
) -> None:
    ctx = context(prompt=f"mail {EMAIL}")
    ctx.decisions.append(Decision("p", "r1", "rule", kind, action, where, "EMAIL_ADDRESS x1", 0))  # type: ignore[arg-type]
    ctx.result = Result(200, {}, answer("fine"))
    _, column = sealed(Bodies(keyring, 65536), ctx)
    assert codec.loads(column) == {"v": 1, "omitted": "not_redacted"}


def test_a_redacted_input_is_stored(keyring: Keyring) -> None:
    ctx = context()
    ctx.decisions.append(Decision("p", "r1", "rule", "pii", "redact", "input", "EMAIL_ADDRESS x1 pseudonymise", 0))
    event_id, column = sealed(Bodies(keyring, 65536), ctx)
    assert "<EMAIL_ADDRESS_1>" in reveal(keyring, column, event_id, "alpha")["request"]


def test_a_body_whose_key_cannot_be_made_is_left_out_and_the_request_still_audited(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    _, column = sealed(Bodies(Keyring(blocker, MASTER), 65536), context())
    assert codec.loads(column) == {"v": 1, "omitted": "key_unavailable"}


def test_without_bodies_the_column_stays_empty() -> None:
    assert event.build(context(), b"s" * 32)["body"] == ""
