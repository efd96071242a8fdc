"""Virtual keys: created once, stored only as SHA-256 hashes, looked up in constant time.

A key reads `gk-<id>.<secret>`: the id (12 hex characters) finds the record, the SHA-256 of the whole key
is compared with `hmac.compare_digest`. The secret has 256 bits of entropy, so a fast hash is the right one
(as for GitHub or Stripe tokens); the plain key is printed once by `gateway keys create` and never stored.

The keys file (JSON, next to gateway.yaml by default) is written atomically under an exclusive lock, and
a running gateway sees a new key at once (an unknown id re-checks the file's stamp) and other changes,
revocations included, within a second (`KeyStore.refresh` runs in the background).
"""

import fcntl
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time
from pathlib import Path

from gateway import codec

PREFIX = "gk-"
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    hash: str
    team: str
    name: str
    models: tuple[str, ...] | None
    created: str
    expires: str | None = None
    revoked: str | None = None
    tags: tuple[str, ...] = ()

    def state(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        if self.expires and datetime.fromisoformat(self.expires) <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Principal:
    """Who a request is made by: carried on every request context and audit event."""

    key_id: str
    team: str
    name: str
    models: tuple[str, ...] | None
    tags: tuple[str, ...] = ()

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_expiry(text: str) -> str:
    """A date (expires at 00:00 UTC that day) or an ISO datetime → ISO datetime in UTC."""
    try:
        moment = datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


class KeyStore:
    """The keys file, held in memory for lookups and re-read when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int] | None = None
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True if it did."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            changed = self._stamp is not None
            self._records, self._stamp = {}, None
            return changed
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self._records = {r.id: r for r in _read(self.path)}
        self._stamp = stamp
        return True

    def authenticate(self, key: str, now: datetime | None = None) -> tuple[Principal | None, str]:
        """(principal, "active") for a good key, else (None, reason)."""
        key_id = key[len(PREFIX) :].split(".", 1)[0] if key.startswith(PREFIX) else ""
        record = self._records.get(key_id)
        if record is None and key_id and self.refresh():  # a key created since the last refresh
            record = self._records.get(key_id)
        matches = hmac.compare_digest(hash_key(key), record.hash if record else _DUMMY_HASH)
        if record is None or not matches:
            return None, "invalid"
        state = record.state(now or datetime.now(UTC))
        if state != "active":
            return None, state
        return Principal(record.id, record.team, record.name, record.models, record.tags), state

    def records(self) -> list[KeyRecord]:
        return sorted(self._records.values(), key=lambda r: r.created)


def create(
    path: Path,
    team: str,
    name: str | None,
    models: list[str] | None,
    expires: str | None,
    tags: list[str] | None = None,
) -> str:
    """Add a key to the file and return the plain key (the only time it exists)."""
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}.{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        hash=hash_key(key),
        team=team,
        name=name or f"{team}-{key_id[:4]}",
        models=tuple(models) if models else None,
        created=datetime.now(UTC).isoformat(),
        expires=parse_expiry(expires) if expires else None,
        tags=tuple(sorted(set(tags or ()))),
    )
    with _locked(path) as records:
        records.append(record)
    return key


def revoke(path: Path, key_id: str) -> bool:
    """Mark a key revoked; False if there is no such active key."""
    with _locked(path) as records:
        for index, record in enumerate(records):
            if record.id == key_id and not record.revoked:
                records[index] = replace(record, revoked=datetime.now(UTC).isoformat())
                return True
    return False


def _read(path: Path) -> list[KeyRecord]:
    data = codec.loads(path.read_bytes())
    return [
        KeyRecord(**{**r, "models": tuple(r["models"]) if r.get("models") else None, "tags": tuple(r.get("tags", ()))})
        for r in data["keys"]
    ]


@contextmanager
def _locked(path: Path) -> Iterator[list[KeyRecord]]:
    """Read-modify-write the keys file under an exclusive lock, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = _read(path) if path.exists() else []
        yield records
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(codec.dumps_pretty({"version": 1, "keys": [asdict(r) for r in records]}))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
