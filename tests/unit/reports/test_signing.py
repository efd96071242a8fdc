"""Report signatures: a detached FILE.sig over the exact bytes, checked against trusted public keys."""

import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit.chain import Signer, checkpoint_message, verify_signature
from gateway.reports import signing


def signed(tmp_path: Path, data: bytes = b'{"report": "compliance"}\n') -> tuple[Path, Signer]:
    signer = Signer.load_or_create(tmp_path / "audit.key")
    path = tmp_path / "report.json"
    path.write_bytes(data)
    signing.sign(path, signer)
    return path, signer


def test_an_untouched_report_is_valid_and_names_its_key(tmp_path: Path) -> None:
    path, signer = signed(tmp_path)
    checked = signing.check(path, {signer.public_key_id: signer.public_pem})
    assert checked.ok and checked.key_id == signer.public_key_id
    sig = json.loads((tmp_path / "report.json.sig").read_text())
    assert sig["algorithm"] == "Ed25519" and sig["file"] == "report.json" and sig["size"] == path.stat().st_size


def test_one_flipped_bit_anywhere_is_tampered_content(tmp_path: Path) -> None:
    path, signer = signed(tmp_path, bytes(range(256)) * 4)
    original = path.read_bytes()
    for at in (0, 500, len(original) - 1):
        data = bytearray(original)
        data[at] ^= 0x80
        path.write_bytes(bytes(data))
        checked = signing.check(path, {signer.public_key_id: signer.public_pem})
        assert not checked.ok and "tampered content" in str(checked.problem)


def test_a_forged_signature_over_the_same_digest_is_refused(tmp_path: Path) -> None:
    path, signer = signed(tmp_path)
    sig = signing.signature_path(path)
    document = json.loads(sig.read_text())
    document["signature"] = "00" * 64
    sig.write_text(json.dumps(document))
    checked = signing.check(path, {signer.public_key_id: signer.public_pem})
    assert not checked.ok and "the signature is bad" in str(checked.problem)


def test_a_key_that_is_not_trusted_is_an_unknown_key(tmp_path: Path) -> None:
    path, _ = signed(tmp_path)
    other = Signer.load_or_create(tmp_path / "other.key")
    checked = signing.check(path, {other.public_key_id: other.public_pem})
    assert not checked.ok and str(checked.problem).startswith("unknown key")


def test_a_missing_or_damaged_signature_file_is_reported(tmp_path: Path) -> None:
    path, signer = signed(tmp_path)
    trusted = {signer.public_key_id: signer.public_pem}
    signing.signature_path(path).write_text("not json")
    assert "damaged signature" in str(signing.check(path, trusted).problem)
    signing.signature_path(path).unlink()
    assert str(signing.check(path, trusted).problem).startswith("missing signature")


def test_a_report_signature_is_never_a_valid_checkpoint_signature(tmp_path: Path) -> None:
    """The audit key signs both: the report message is domain-separated from the checkpoint message."""
    path, signer = signed(tmp_path)
    signature = json.loads(signing.signature_path(path).read_text())["signature"]
    message = signing.message(path.read_bytes())
    assert message.startswith("gateway-report/1|") and verify_signature(signer.public_pem, message, signature)
    checkpoint = checkpoint_message(1, "0" * 64, 1, datetime.now(UTC))
    assert message.split("|")[0] != checkpoint.split("|")[0]
