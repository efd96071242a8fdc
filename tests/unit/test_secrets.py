"""Upstream secrets encrypted at rest: they round-trip, and every failure names where and never shows the secret."""

import re

import pytest

from gateway import secrets
from gateway.settings import SecretError

SECRET = "sk-upstream-0123456789abcdef"
WHERE = "gateway.yaml: models[gpt-4o].api_key"


@pytest.fixture
def key() -> bytes:
    return secrets.load_master_key({secrets.MASTER_KEY_ENV: secrets.generate_master_key()})


def test_an_encrypted_secret_decrypts_to_the_original(key: bytes) -> None:
    token = secrets.encrypt(SECRET, key)
    assert token.startswith("enc:v1:")
    assert SECRET not in token
    assert secrets.decrypt(token, key, WHERE) == SECRET


def test_non_ascii_and_empty_secrets_round_trip(key: bytes) -> None:
    for plaintext in ["pässwörd-🔑", ""]:
        assert secrets.decrypt(secrets.encrypt(plaintext, key), key, WHERE) == plaintext


def test_encrypting_the_same_secret_twice_gives_different_values(key: bytes) -> None:
    assert secrets.encrypt(SECRET, key) != secrets.encrypt(SECRET, key)


def test_a_wrong_master_key_is_refused_naming_where_but_not_the_secret(key: bytes) -> None:
    token = secrets.encrypt(SECRET, key)
    other = secrets.load_master_key({secrets.MASTER_KEY_ENV: secrets.generate_master_key()})
    with pytest.raises(SecretError) as caught:
        secrets.decrypt(token, other, WHERE)
    message = str(caught.value)
    assert message == f"cannot decrypt {WHERE}: wrong GATEWAY_MASTER_KEY or a damaged value"
    assert SECRET not in message


def test_a_tampered_value_is_refused(key: bytes) -> None:
    token = secrets.encrypt(SECRET, key)
    at = len("enc:v1:") + 20
    tampered = token[:at] + ("B" if token[at] == "A" else "A") + token[at + 1 :]
    with pytest.raises(SecretError, match=r"^cannot decrypt .* damaged value$"):
        secrets.decrypt(tampered, key, WHERE)


def test_a_truncated_or_garbled_value_is_refused_naming_where(key: bytes) -> None:
    for token in ["enc:v1:AAAA", "enc:v1:not*base64!", "sk-plain"]:
        with pytest.raises(SecretError, match=r"^gateway\.yaml: models\[gpt-4o\]\.api_key: "):
            secrets.decrypt(token, key, WHERE)


def test_an_unknown_version_is_refused(key: bytes) -> None:
    token = secrets.encrypt(SECRET, key).replace("enc:v1:", "enc:v2:")
    with pytest.raises(SecretError, match=r"unknown encrypted secret format enc:v2:"):
        secrets.decrypt(token, key, WHERE)


def test_a_missing_master_key_says_how_to_make_one() -> None:
    with pytest.raises(SecretError, match=r"GATEWAY_MASTER_KEY is not set: `gateway secrets keygen` makes one"):
        secrets.load_master_key({})


def test_a_short_or_malformed_master_key_is_refused_without_echoing_it() -> None:
    for value in ["c2hvcnQ", "not base64 at all!"]:
        with pytest.raises(SecretError, match="`gateway secrets keygen` makes one") as caught:
            secrets.load_master_key({secrets.MASTER_KEY_ENV: value})
        assert value not in str(caught.value)


def test_a_master_key_is_read_with_or_without_padding() -> None:
    bare = secrets.generate_master_key()
    assert len(bare) == 43
    padded = bare + "="
    assert secrets.load_master_key({secrets.MASTER_KEY_ENV: bare}) == secrets.load_master_key(
        {secrets.MASTER_KEY_ENV: padded}
    )


def test_resolve_reads_env_references_literals_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY_FOR_TEST", SECRET)
    assert secrets.resolve("env:UPSTREAM_KEY_FOR_TEST", WHERE) == SECRET
    assert secrets.resolve("sk-literal", WHERE) == "sk-literal"
    assert secrets.resolve(None, WHERE) is None


def test_resolve_decrypts_enc_values_with_the_master_key_from_the_environment() -> None:
    master = secrets.generate_master_key()
    token = secrets.encrypt(SECRET, secrets.load_master_key({secrets.MASTER_KEY_ENV: master}))
    assert secrets.resolve(token, WHERE, {secrets.MASTER_KEY_ENV: master}) == SECRET


def test_resolve_of_an_enc_value_without_a_master_key_names_where(key: bytes) -> None:
    token = secrets.encrypt(SECRET, key)
    with pytest.raises(SecretError, match=f"^{re.escape(WHERE)}: GATEWAY_MASTER_KEY is not set"):
        secrets.resolve(token, WHERE, {})
