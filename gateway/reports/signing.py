"""Signing a report file and checking it: a detached `FILE.sig` beside it, for every format alike.

    sign(path, signer) -> Path                   writes path + ".sig"
    check(path, trusted) -> Checked              ok, key_id, problem

The signature covers the exact bytes of the file (HTML, PDF, JSON or CSV: nothing is embedded, so the file is
what the auditor opens and signing never changes what is signed): Ed25519 over the message
`gateway-report/1|<sha256 hex of the bytes>|<size>`. The prefix keeps a report signature from ever being taken
for a checkpoint signature made with the same key. `FILE.sig` is JSON:

    {"format": "gateway-report-signature/1", "file": "report.pdf", "size": 48213,
     "sha256": "<hex>", "algorithm": "Ed25519", "key_id": "<16 hex>", "signature": "<hex>",
     "signed_at": "2026-11-30T12:00:00Z"}

The key is the audit signing key (`audit.signing_key` in gateway.yaml, the one that signs the audit chain's
checkpoints; gateway.audit.chain.Signer), so the public key an auditor already trusts for the chain, the `.pub`
beside it, also checks the reports, and `key_id` is the same fingerprint the checkpoints carry.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import codec
from gateway.audit.chain import Signer, verify_signature

SIGNATURE_FORMAT = "gateway-report-signature/1"
ALGORITHM = "Ed25519"
DOMAIN = "gateway-report/1"


def message(data: bytes) -> str:
    """What is signed for a file's bytes."""
    return f"{DOMAIN}|{hashlib.sha256(data).hexdigest()}|{len(data)}"


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + ".sig")


def sign(path: Path, signer: Signer) -> Path:
    """Sign the file as it is on disk now; write and return FILE.sig."""
    data = path.read_bytes()
    document = {
        "format": SIGNATURE_FORMAT,
        "file": path.name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "algorithm": ALGORITHM,
        "key_id": signer.public_key_id,
        "signature": signer.sign(message(data)),
        "signed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    target = signature_path(path)
    target.write_bytes(codec.dumps_pretty(document) + b"\n")
    return target


@dataclass(frozen=True)
class Checked:
    ok: bool
    key_id: str | None
    problem: str | None = None


def check(path: Path, trusted: Mapping[str, bytes]) -> Checked:
    """Check FILE against FILE.sig with the trusted public keys (key id → PEM)."""
    sig = signature_path(path)
    if not path.is_file():
        return Checked(False, None, f"{path} does not exist")
    if not sig.is_file():
        return Checked(False, None, f"missing signature: {sig.name} is not beside {path.name}")
    try:
        document = codec.loads(sig.read_bytes())
        key_id, signature = str(document["key_id"]), str(document["signature"])
        algorithm = document.get("algorithm")
    except (codec.JSONDecodeError, KeyError, TypeError) as exc:
        return Checked(False, None, f"damaged signature file {sig.name}: {exc}")
    if algorithm != ALGORITHM:
        return Checked(False, key_id, f"unsupported signature algorithm {algorithm!r}")
    pem = trusted.get(key_id)
    if pem is None:
        known = ", ".join(sorted(trusted)) or "none"
        return Checked(False, key_id, f"unknown key: signed by {key_id}, which is not a trusted key (trusted: {known})")
    data = path.read_bytes()
    if not verify_signature(pem, message(data), signature):
        digest = hashlib.sha256(data).hexdigest()
        why = "its sha256 differs from the signed one" if digest != document.get("sha256") else "the signature is bad"
        return Checked(False, key_id, f"tampered content: {path.name} is not what {key_id} signed ({why})")
    return Checked(True, key_id)
