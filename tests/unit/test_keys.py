"""Virtual keys: only hashes on disk, constant-time lookup, expiry and revocation."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.auth import keys


def test_a_created_key_authenticates_to_its_principal(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = keys.create(path, "ml", "bot", ["m1"], None)
    principal, state = keys.KeyStore(path).authenticate(key)
    assert state == "active"
    assert principal == keys.Principal(key[3:15], "ml", "bot", ("m1",))
    assert principal.may_use("m1") and not principal.may_use("m2")
    assert key not in path.read_text()


@pytest.mark.parametrize("tamper", ["gk-", "", "gk-000000000000.x", "sk-abc"])
def test_wrong_keys_are_invalid(tmp_path: Path, tamper: str) -> None:
    path = tmp_path / "keys.json"
    keys.create(path, "ml", None, None, None)
    assert keys.KeyStore(path).authenticate(tamper) == (None, "invalid")


def test_a_right_id_with_a_wrong_secret_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = keys.create(path, "ml", None, None, None)
    assert keys.KeyStore(path).authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) == (None, "invalid")


def test_expired_and_revoked_keys_say_so(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    expiring = keys.create(path, "ml", None, None, "2030-01-01")
    revoked = keys.create(path, "ml", None, None, None)
    assert keys.revoke(path, revoked[3:15])
    assert not keys.revoke(path, revoked[3:15])
    store = keys.KeyStore(path)
    assert store.authenticate(expiring, now=datetime(2029, 12, 31, 23, 59, tzinfo=UTC))[1] == "active"
    assert store.authenticate(expiring, now=datetime(2030, 1, 1, tzinfo=UTC))[1] == "expired"
    assert store.authenticate(revoked)[1] == "revoked"


def test_a_key_created_after_start_is_seen_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    store = keys.KeyStore(path)
    key = keys.create(path, "ml", None, None, None)
    assert store.authenticate(key)[1] == "active"


def test_expiry_accepts_dates_and_datetimes() -> None:
    assert keys.parse_expiry("2030-05-01") == "2030-05-01T00:00:00+00:00"
    assert keys.parse_expiry("2030-05-01T12:00:00+02:00") == "2030-05-01T10:00:00+00:00"
    with pytest.raises(ValueError):
        keys.parse_expiry("next tuesday")
