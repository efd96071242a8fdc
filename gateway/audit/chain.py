"""The tamper-evident hash chain of the audit rows, its signed checkpoints, and the walk that verifies both.

Every row carries `seq` (1, 2, 3, ... in insert order within its `chain`, one chain per shipper), `prev_hash`
(the hash of row seq - 1; before the first, `genesis(chain)`) and `hash = SHA-256(prev_hash + canonical(event
columns))`. Canonical (gateway.audit.canonical, the one definition the insert and verify both use) is JSON
with sorted keys of the event columns whose value is not the column's default, each value as ClickHouse gives
it back: times as epoch milliseconds, UUIDs as text, floats as float64, tuples as lists. Leaving defaults out
means a column added by a later migration (old rows read it back as its default) changes no existing row's hash.

The chain alone shows that a row was altered (its hash), deleted (a gap in seq) or inserted (a repeated seq, or
a row whose prev_hash does not link). It cannot show a forged row appended with a correctly computed hash, nor
the last rows removed: a writer without the signing key can compute SHA-256 too. That is what checkpoints are
for: after every batch the store signs (Ed25519) `seq|hash|rows|created` of the batch's last row, and verify
requires every row to lie in a signed checkpoint's range `seq - rows + 1 .. seq`. A forged row appended and then
chained into by the next batch is in no checkpoint's range, a forged checkpoint fails its signature, a removed
tail leaves a checkpoint naming a row that is not there. Only a tail removed together with its checkpoints goes
unseen: compare the head with a checkpoint kept elsewhere for that.

Retention drops whole old parts (TTL by month partition), which removes the start of the chain; requests that
were in flight at a month's boundary leave a few rows of the expired month among the first kept ones. A gap
is therefore accepted as expiry, not deletion, when the row after it is older than the retention horizon plus
a day, and the chain then continues from that row's prev_hash.
"""

import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby, islice
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.canonical import canonical, canonical_rows, epoch_ms
from gateway.audit.schema import EVENT_NAMES

GENESIS = "0" * 64
CHECKPOINT_VERSION = "gateway-audit-checkpoint-v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    return (_EPOCH + ms * _MS).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def hash_values(prev_hash: str, values: Sequence[Any]) -> str:
    """The chain hash of one row's event columns (in EVENT_NAMES order) after prev_hash."""
    return link(prev_hash, canonical(values))


def link(prev_hash: str, canonical_row: bytes) -> str:
    """The chain hash of a row after prev_hash, from the row's canonical bytes (gateway.audit.canonical)."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_row).hexdigest()


def hash_rows(prev_hash: str, columns: Sequence[Sequence[Any]]) -> list[str]:
    """The hashes of a batch of rows given column by column (EVENT_NAMES order), chained from prev_hash."""
    hashes = []
    for canonical_row in canonical_rows(columns):
        prev_hash = link(prev_hash, canonical_row)
        hashes.append(prev_hash)
    return hashes


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The chain hash of a row (a dict of the event columns, as inserted or as read back) after prev_hash."""
    return hash_values(prev_hash, [row.get(name) for name in EVENT_NAMES])


def genesis(chain: str) -> str:
    """The prev_hash of a chain's first row: GENESIS for the unnamed chain, else bound to the chain's name
    (a row moved into another chain does not link there)."""
    return GENESIS if not chain else hashlib.sha256(f"gateway-audit-chain|{chain}".encode()).hexdigest()


def checkpoint_message(seq: int, chain_hash: str, rows: int, created: datetime, chain: str = "") -> str:
    message = f"{CHECKPOINT_VERSION}|{seq}|{chain_hash}|{rows}|{iso_ms(epoch_ms(created))}"
    return f"{message}|{chain}" if chain else message


def public_key_id(public_pem: bytes) -> str:
    """A public key's fingerprint: SHA-256 of its raw 32 bytes, first 16 hex characters."""
    key = serialization.load_pem_public_key(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public_pem: bytes, message: str, signature: str) -> bool:
    try:
        key = serialization.load_pem_public_key(public_pem)
        if not isinstance(key, Ed25519PublicKey):
            return False
        key.verify(bytes.fromhex(signature), message.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """The Ed25519 key that signs checkpoints: PEM at `path` (mode 600), its public key at path.with_suffix('.pub')."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_id = public_key_id(self.public_pem)

    @classmethod
    def load_or_create(cls, path: Path) -> "Signer":
        """Read the key, or create it atomically (racing processes end up with the same one)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create_private(path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        signer = cls(key)
        public = path.with_suffix(".pub")
        if not public.exists() or public.read_bytes() != signer.public_pem:
            _write_atomic(public, signer.public_pem, 0o644)
        return signer

    def sign(self, message: str) -> str:
        return self._key.sign(message.encode()).hex()


def _create_private(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    try:
        os.link(tmp, path)  # fails if another process created it first: theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Checkpoint(NamedTuple):
    seq: int
    hash: str
    rows: int
    created: datetime
    key_id: str
    signature: str
    chain: str = ""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    checkpoints_checked: int
    first_problem: str | None
    first_seq: int = 0  # the first and last seq verified (0 if none), of the one chain or the failing one
    last_seq: int = 0
    chains: int = 1  # how many chains were verified


class _Failed(Exception):
    pass


@dataclass
class _Walk:
    """The state of one verification: rows and checkpoints arrive ordered by seq."""

    expected_seq: int
    expected_prev: str | None  # None: take the next row's prev_hash on trust (a range, or after expiry)
    keys: Mapping[str, bytes]
    expired_before_ms: int
    checkpoints: Iterator[Checkpoint]
    checkpoint: Checkpoint | None = None
    rows: int = 0
    signed: int = 0
    first_seq: int = 0
    last_seq: int = 0

    def row(self, seq: int, prev: str, stored: str, values: Sequence[Any], encoded: bytes) -> None:
        name = f"row seq {seq} (event_id {values[0]})"
        if seq < self.expected_seq:
            raise _Failed(f"{name} lies before the start of the chain at seq {self.expected_seq}: it was inserted")
        if seq > self.expected_seq:
            self._gap(seq, name, epoch_ms(values[1]))
        if link(prev, encoded) != stored:
            raise _Failed(f"{name} was altered: its columns do not hash to its stored hash")
        if self.expected_prev is not None and prev != self.expected_prev:
            raise _Failed(f"{name} was inserted or replaced: its prev_hash is not the hash of seq {seq - 1}")
        self._checkpoints(seq, name, stored)
        self.first_seq = self.first_seq or seq
        self.rows += 1
        self.last_seq, self.expected_seq, self.expected_prev = seq, seq + 1, stored

    def _gap(self, seq: int, name: str, ts_ms: int) -> None:
        missing = f"seq {self.expected_seq}" + (f"..{seq - 1}" if seq - 1 > self.expected_seq else "")
        if ts_ms >= self.expired_before_ms:
            raise _Failed(f"{missing} missing before {name}: rows were deleted")
        self.expected_prev = None  # expired by retention: continue from this row
        while self.checkpoint is not None and self.checkpoint.seq < seq:
            self.checkpoint = next(self.checkpoints, None)

    def _checkpoints(self, seq: int, name: str, stored: str) -> None:
        if self.checkpoint is not None and self.checkpoint.seq < seq:
            raise _Failed(f"checkpoint at seq {self.checkpoint.seq} names a row that is not there: it was deleted")
        cp = self.checkpoint
        if self.keys and (cp is None or cp.seq - cp.rows >= seq):
            raise _Failed(f"{name} is not covered by any signed checkpoint: it was added outside the store")
        while self.checkpoint is not None and self.checkpoint.seq == seq:
            _check_checkpoint(self.checkpoint, stored, self.keys)
            self.signed += 1
            self.checkpoint = next(self.checkpoints, None)

    def end(self) -> None:
        if self.checkpoint is not None:
            raise _Failed(f"checkpoint at seq {self.checkpoint.seq} names a row that is not there: it was deleted")

    def result(self, problem: str | None) -> "VerifyResult":
        return VerifyResult(problem is None, self.rows, self.signed, problem, self.first_seq, self.last_seq)


def _check_checkpoint(cp: Checkpoint, stored: str, keys: Mapping[str, bytes]) -> None:
    where = f"checkpoint at seq {cp.seq}"
    if cp.hash != stored:
        raise _Failed(f"{where} does not match the chain: its hash is not the hash of row seq {cp.seq}")
    public_pem = keys.get(cp.key_id)
    if public_pem is None:
        raise _Failed(f"{where} is signed by key {cp.key_id!r}, which is not a trusted public key")
    message = checkpoint_message(cp.seq, cp.hash, cp.rows, cp.created, cp.chain)
    if not verify_signature(public_pem, message, cp.signature):
        raise _Failed(f"{where} has a bad signature: it was forged or altered")


def walk(
    rows: Iterable[Sequence[Any]],
    checkpoints: Iterable[Checkpoint],
    start_seq: int,
    anchor: str | None,
    keys: Mapping[str, bytes],
    expired_before_ms: int = 0,
) -> VerifyResult:
    """Verify rows `(seq, prev_hash, hash, *event values)` and checkpoints, both ordered by seq, from start_seq.

    `anchor` is the hash expected before start_seq (None: trust the first row's prev_hash); with `keys` every row
    must be covered by a checkpoint; a gap before a row older than `expired_before_ms` is retention, not deletion.
    """
    cps = iter(checkpoints)
    state = _Walk(start_seq, anchor, keys, expired_before_ms, cps, next(cps, None))
    try:
        for seq, group in groupby(_encoded(rows), key=lambda pair: pair[0][0]):
            same = list(group)
            if len(same) > 1:
                ids = ", ".join(str(row[3]) for row, _ in same)
                raise _Failed(f"seq {seq} is held by {len(same)} rows (event_id {ids}): rows were inserted")
            (_, prev, stored, *values), encoded = same[0]
            state.row(seq, prev, stored, values, encoded)
        state.end()
    except _Failed as problem:
        return state.result(str(problem))
    return state.result(None)


def _encoded(rows: Iterable[Sequence[Any]], chunk: int = 256) -> Iterator[tuple[Sequence[Any], bytes]]:
    """Each row `(seq, prev_hash, hash, *event values)` with the canonical bytes of its event values, encoded
    a chunk of rows at a time (a small one: larger chunks keep more objects alive for the garbage collector to
    visit, and verify got slower past a thousand rows)."""
    source = iter(rows)
    while page := list(islice(source, chunk)):
        yield from zip(page, canonical_rows(list(zip(*page, strict=True))[3:]), strict=True)
