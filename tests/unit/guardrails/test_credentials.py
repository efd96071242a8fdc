"""Credential detectors: every kind finds its real-looking keys, and ordinary text, UUIDs, hashes, base64
blobs and documentation placeholders are left alone."""

import base64
import hashlib
import json
import random
import time
import uuid
from pathlib import Path

import pytest

from gateway.auth import keys
from gateway.guardrails.credentials import KINDS, Secrets

# A fixed random source, so the "random" key bodies are the same on every run.
RANDOM = random.Random(20261123)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def random_string(length: int, alphabet: str = ALNUM) -> str:
    return "".join(RANDOM.choice(alphabet) for _ in range(length))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(header: dict[str, str]) -> str:
    payload = {"sub": "1234567890", "name": "John Doe", "iat": 1516239022}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{random_string(43)}"


PEM_BODY = "\n".join(base64.b64encode(RANDOM.randbytes(48 * 25)).decode()[i : i + 64] for i in range(0, 1600, 64))
PRIVATE_KEY = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----"

SECRETS: list[tuple[str, str]] = [
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_access_key_id", "ASIA" + random_string(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
    ("openai_api_key", "sk-" + random_string(20) + "T3BlbkFJ" + random_string(20)),
    ("openai_api_key", "sk-proj-" + random_string(74, ALNUM + "-_") + "T3BlbkFJ" + random_string(74, ALNUM + "-_")),
    ("openai_api_key", "sk-svcacct-" + random_string(64, ALNUM + "-_")),
    ("anthropic_api_key", "sk-ant-api03-" + random_string(93, ALNUM + "-_") + "AA"),
    ("github_token", "ghp_" + random_string(36)),
    ("github_token", "ghs_" + random_string(36)),
    ("github_token", "github_pat_11" + random_string(20) + "_" + random_string(59)),
    ("slack_token", "xoxb-123456789012-1234567890123-" + random_string(24)),
    ("slack_token", "xoxp-1234567890-1234567890-1234567890-" + random_string(32, "0123456789abcdef")),
    ("slack_webhook", "https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/" + random_string(24)),
    ("google_api_key", "AIza" + random_string(35, ALNUM + "-_")),
    ("stripe_key", "sk_live_" + random_string(24)),
    ("stripe_key", "rk_live_" + random_string(99)),
    ("jwt", make_jwt({"alg": "HS256", "typ": "JWT"})),
    ("jwt", make_jwt({"alg": "RS256", "kid": "key-1"})),
    ("private_key", PRIVATE_KEY),
    (
        "private_key",
        PRIVATE_KEY.replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE").replace("END PRIVATE", "END RSA PRIVATE"),
    ),
    ("private_key", PRIVATE_KEY.replace("PRIVATE KEY", "OPENSSH PRIVATE KEY")),
    ("gateway_key", "gk-0123456789ab." + b64url(RANDOM.randbytes(32))),
]


@pytest.mark.parametrize(("kind", "secret"), SECRETS, ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(SECRETS)])
def test_each_kind_finds_its_secret_in_prose(kind: str, secret: str) -> None:
    value = f"Here is my key:\n{secret}\nplease keep it safe."
    hits = Secrets().scan(value)
    assert [(value[hit.start : hit.end], hit.label) for hit in hits] == [(secret, kind)]
    assert Secrets([kind]).window >= len(secret)


@pytest.mark.parametrize("wrapping", ['"{}"', "'{}'", "key={}&x=1", "({})", "`{}`", "{},", "Bearer {}"])
def test_secrets_are_found_in_quotes_urls_and_headers(wrapping: str) -> None:
    secret = "ghp_" + random_string(36)
    value = wrapping.format(secret)
    assert [(value[hit.start : hit.end], hit.label) for hit in Secrets().scan(value)] == [(secret, "github_token")]


@pytest.mark.parametrize(
    "assignment",
    [
        "aws_secret_access_key = {}",
        "AWS_SECRET_ACCESS_KEY={}",
        '"SecretAccessKey": "{}"',
        "aws_secret_access_key: '{}'",
    ],
)
def test_an_aws_secret_key_is_found_after_its_name_and_only_the_value_is_the_hit(assignment: str) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    value = assignment.format(secret)
    assert [(value[hit.start : hit.end], hit.label) for hit in Secrets().scan(value)] == [
        (secret, "aws_secret_access_key")
    ]


def test_forty_base64_characters_without_an_aws_context_are_not_a_secret_key() -> None:
    assert Secrets().scan("value: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") == []


def test_a_private_key_without_its_end_line_is_found_to_its_last_base64_line() -> None:
    truncated = PRIVATE_KEY[:600]
    value = truncated + "\n\nThanks for looking at this!"
    hits = Secrets(["private_key"]).scan(value)
    assert [(value[hit.start : hit.end], hit.label) for hit in hits] == [(truncated, "private_key")]


def test_a_private_key_escaped_in_a_json_string_is_found() -> None:
    document = json.dumps({"type": "service_account", "private_key": PRIVATE_KEY + "\n"})
    hits = Secrets().scan(document)
    assert [hit.label for hit in hits] == ["private_key"]
    assert document[hits[0].start :].startswith("-----BEGIN PRIVATE KEY-----")


def test_a_key_made_by_the_gateway_is_found(tmp_path: Path) -> None:
    key = keys.create(tmp_path / "keys.json", "ml", None, None, None)
    value = f"curl -H 'Authorization: Bearer {key}' https://gateway/v1/models"
    assert [(value[hit.start : hit.end], hit.label) for hit in Secrets().scan(value)] == [(key, "gateway_key")]


def test_only_the_selected_kinds_are_looked_for() -> None:
    value = "ghp_" + random_string(36) + " AKIAIOSFODNN7EXAMPLE"
    assert [hit.label for hit in Secrets(["aws_access_key_id"]).scan(value)] == ["aws_access_key_id"]
    assert Secrets(["aws_access_key_id"]).kinds == ["aws_access_key_id"]


def test_an_unknown_kind_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown secret kind 'aws_key'; known kinds: aws_access_key_id, .*gateway_key"
    ):
        Secrets(["github_token", "aws_key"])
    with pytest.raises(ValueError, match="no secret kinds"):
        Secrets([])


def test_hits_come_in_text_order_labelled_by_kind_never_by_the_secret() -> None:
    first, second = "AKIAIOSFODNN7EXAMPLE", "sk_live_" + random_string(30)
    hits = Secrets().scan(f"{second} then {first}")
    assert [hit.label for hit in hits] == ["stripe_key", "aws_access_key_id"]
    assert all(first not in hit.label and second not in hit.label for hit in hits)


def test_every_kind_has_a_bounded_window() -> None:
    for detector in KINDS.values():
        assert 0 < detector.window <= 8192


# --- false positives -----------------------------------------------------------------------------------------

PNG_BASE64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + RANDOM.randbytes(6000)).decode()

NOT_SECRETS = [
    "The quick brown fox jumps over the lazy dog. Ask me anything about AWS, secret management or API keys.",
    "Set OPENAI_API_KEY to your key (it starts with sk-) and AWS_SECRET_ACCESS_KEY to yours.",
    " ".join(str(uuid.UUID(int=RANDOM.getrandbits(128))) for _ in range(20)),
    " ".join(str(uuid.UUID(int=RANDOM.getrandbits(128))).upper() for _ in range(20)),
    "commit 3f786850e387550fdab836ed7e6dc881de23001b\nMerge: 1a2b3c4 5d6e7f8",
    " ".join(hashlib.sha1(str(i).encode()).hexdigest() for i in range(20)),
    " ".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(20)),
    "aws_secret_access_key = " + hashlib.sha1(b"not a key").hexdigest(),
    f"![chart](data:image/png;base64,{PNG_BASE64})",
    f'<img src="data:image/png;base64,{PNG_BASE64}">',
    "AKIAAAAAAAAAAAAAAAAA is a placeholder, and so is AKIAXXXXXXXXXXXXXXXX",
    "xoxb-XXXXXXXXXXXX-XXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "<div class='sk-this-is-a-very-long-css-class-Name2-for-the-layout'></div>",
    "sk-upstream-0123456789abcdef and sk-test and sk_test_" + random_string(24),
    "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
    "What does -----BEGIN RSA PRIVATE KEY----- mean at the top of a PEM file?",
    "eyJhbGciOiJIUzI1NiJ9 alone is not a token; neither is version 1.2.3 or a.b.c",
    "eyJub3QiOiJhIGhlYWRlciJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",  # a header without "alg"
    "Use the gk-... key from the dashboard, e.g. gk-000000000000.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "ghp_ tokens are 40 characters: ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "Die Straße 12345 in 80331 München, Telefon +49 89 1234567, IBAN DE89370400440532013000",
    "def f(x):\n    return {'alg': x, 'typ': 'JWT'}  # builds a header\n",
]


@pytest.mark.parametrize("value", NOT_SECRETS, ids=range(len(NOT_SECRETS)))
def test_ordinary_text_ids_hashes_and_blobs_are_not_secrets(value: str) -> None:
    assert Secrets().scan(value) == []


def test_key_shaped_runs_inside_longer_base64_are_not_secrets() -> None:
    for _ in range(50):
        blob = base64.b64encode(RANDOM.randbytes(3000)).decode()
        embedded = blob[:100] + "AKIAIOSFODNN7EXAMPLE" + blob[100:200] + "AIza" + random_string(35) + blob[200:]
        assert Secrets().scan(embedded) == []


# --- bounded time --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a" * 100_000,
        "1" * 100_000,
        "@" * 100_000,
        "." * 100_000,
        "-" * 100_000,
        "eyJ" * 33_333,
        "eyJhbGciOiJIUzI1NiJ9." * 5_000,
        "sk-" * 33_333,
        "AKIA" * 25_000,
        "-----BEGIN PRIVATE KEY-----" * 3_000,
        "-----BEGIN PRIVATE KEY-----" + ("\n" + "A" * 64) * 1_500,
        "aws_secret=" * 9_000,
    ],
    ids=lambda value: f"{value[:4]!r}x{len(value)}",
)
def test_adversarial_input_is_scanned_in_bounded_time(value: str) -> None:
    started = time.perf_counter()
    Secrets().scan(value)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("value", ["", "\ud800eyJ\udfff", "\x00" * 10, "-----BEGIN PRIVATE KEY-----\\n\\n\\n"])
def test_odd_text_never_raises(value: str) -> None:
    Secrets().scan(value)
