"""The per-team data keys of the stored audit bodies (gateway.audit.bodies), and their destruction.

    Keyring(directory, master_key).current(team) -> TeamKey   the key new bodies of `team` are sealed with
    Keyring(directory, master_key).find(team, kid)            the key a stored body names; None once shredded
    shred(directory, team) -> int                             overwrite and delete the team's key files
    master_key()                                              GATEWAY_MASTER_KEY, or a SecretError saying why
                                                              `audit.bodies` needs it

One file per team key, `<directory>/<tag>.key`, where the tag is the first 32 hex digits of SHA-256(team), so
any team name gives a safe file name. The file is one JSON object `{"v": 1, "team", "kid", "created",
"wrapped"}`: `wrapped` is base64(nonce[12] + AES-256-GCM(master key, data key)) with the team and the key id
as associated data, so the 32 random bytes of the data key never touch the disk in the clear and a file
renamed to another team's tag does not unwrap. `kid` is a random key id (16 hex digits) that every sealed body
names.

Creation is atomic and race-free between worker processes: the file is written whole to a private temporary
file (O_EXCL, mode 600), fsynced, then hard-linked to its name. The link fails if the name exists, so workers
racing to make a team's key all end up using the one that landed first; the directory is fsynced.

Keys are cached per process. Every `RECHECK_SECONDS` a cached key is compared with the key id on disk (one
small read), so a worker notices within about a second that a key was shredded, and makes a new one (a new key
id) for the bodies that follow; the bodies sealed in that second name the destroyed key and stay unreadable,
which errs on the side of erasure.

Shredding overwrites each file with random bytes, fsyncs it, unlinks it and fsyncs the directory. On flash
storage and copy-on-write filesystems an overwrite may not reach the old blocks: what makes the bodies
unreadable is that the data key existed nowhere else (keep this directory out of backups), and, for a copy
that escaped, that it is wrapped under the master key.
"""

import base64
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import codec, secrets
from gateway.settings import SecretError

KEY_BYTES = 32
NONCE_BYTES = 12
RECHECK_SECONDS = 1.0
VERSION = 1


class KeyringError(Exception):
    """A team key file that cannot be used: damaged, another team's, or wrapped under another master key."""


@dataclass(slots=True)
class TeamKey:
    team: str
    kid: str
    aead: AESGCM
    checked: float = 0.0  # when the key id on disk was last seen to be this one (monotonic seconds)


def master_key() -> bytes:
    """The master key that wraps the team keys; a SecretError naming `audit.bodies` if it is not usable."""
    try:
        return secrets.load_master_key()
    except SecretError as exc:
        raise SecretError(f"audit.bodies is true and the body keys are wrapped under the master key: {exc}") from None


def team_tag(team: str) -> str:
    return hashlib.sha256(team.encode("utf-8")).hexdigest()[:32]


class Keyring:
    """The team keys of one keyring directory, cached for one process (used from one thread: the event loop)."""

    def __init__(
        self,
        directory: Path,
        master: bytes,
        recheck: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.master = AESGCM(master)
        self.recheck = recheck
        self.clock = clock
        self._keys: dict[str, TeamKey] = {}

    def path(self, team: str) -> Path:
        return self.directory / f"{team_tag(team)}.key"

    def current(self, team: str) -> TeamKey:
        """The key to seal `team`'s next body with: the cached one, unless the file changed or went away."""
        key = self._keys.get(team)
        now = self.clock()
        if key is not None and now - key.checked < self.recheck:
            return key
        record = _read(self.path(team))
        if key is None or record is None or record.get("kid") != key.kid:
            key = self._unwrap(team, record) if record is not None else self._create(team)
        key.checked = now
        self._keys[team] = key
        return key

    def find(self, team: str, kid: str) -> TeamKey | None:
        """The key `kid` of `team`, read from disk; None if it is gone (shredded, maybe replaced by a new one)."""
        record = _read(self.path(team))
        if record is None or record.get("kid") != kid:
            return None
        return self._unwrap(team, record)

    def _create(self, team: str) -> TeamKey:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.path(team)
        for _ in range(3):  # a shred may remove the temporary file between its write and its link
            kid = os.urandom(8).hex()
            temp = path.with_name(f"{path.stem}.{os.urandom(6).hex()}.tmp")
            _write_new(temp, codec.dumps(self._wrap(team, kid, os.urandom(KEY_BYTES))))
            try:
                os.link(temp, path)
            except FileExistsError:
                pass  # another worker made it first: everyone uses that one
            except FileNotFoundError:
                continue
            finally:
                temp.unlink(missing_ok=True)
            _fsync_directory(self.directory)
            record = _read(path)
            if record is not None:
                return self._unwrap(team, record)
        raise KeyringError(f"the body key of a team could not be created in {self.directory}")

    def _wrap(self, team: str, kid: str, key: bytes) -> dict[str, Any]:
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + self.master.encrypt(nonce, key, _wrapping_aad(team, kid))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        return {"v": VERSION, "team": team, "kid": kid, "created": created, "wrapped": _b64(wrapped)}

    def _unwrap(self, team: str, record: dict[str, Any]) -> TeamKey:
        where = self.path(team)
        kid = record.get("kid")
        if record.get("v") != VERSION or record.get("team") != team or not isinstance(kid, str):
            raise KeyringError(f"{where} is not a body key of this team (damaged, or moved from another team)")
        try:
            raw = base64.b64decode(str(record.get("wrapped")), validate=True)
            key = self.master.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _wrapping_aad(team, kid))
        except (ValueError, InvalidTag):
            raise KeyringError(f"{where} does not unwrap: another GATEWAY_MASTER_KEY, or a damaged file") from None
        return TeamKey(team, kid, AESGCM(key))


def shred(directory: Path, team: str) -> int:
    """Overwrite, fsync and delete every key file of `team` (temporary ones too); how many were destroyed."""
    if not directory.is_dir():
        return 0
    destroyed = 0
    for path in sorted(directory.glob(f"{team_tag(team)}.*")):
        try:
            _overwrite(path)
            path.unlink()
        except FileNotFoundError:  # another shred, or a worker's temporary file that just went away
            continue
        destroyed += 1
    _fsync_directory(directory)
    return destroyed


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        record = codec.loads(data)
    except codec.JSONDecodeError:
        raise KeyringError(f"{path} is damaged (not a body key file)") from None
    if not isinstance(record, dict):
        raise KeyringError(f"{path} is damaged (not a body key file)")
    return record


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _overwrite(path: Path) -> None:
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wrapping_aad(team: str, kid: str) -> bytes:
    return codec.dumps(["gateway-audit-body-key", VERSION, team, kid])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
