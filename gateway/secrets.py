"""Upstream secrets encrypted at rest, and the `gateway secrets` command.

An upstream `api_key` in gateway.yaml is one of:

    env:VAR       read from the environment when the gateway starts
    enc:v1:...    AES-256-GCM under the master key in GATEWAY_MASTER_KEY
    anything else a literal (allowed, warned about when the file loads)

An `enc:v1:` value is `urlsafe_b64(nonce[12] + ciphertext + tag[16])`, encrypted with the associated data
`gateway-secret-v1`, so the value can sit in a file or a repository without the upstream key being readable.
`gateway secrets keygen` makes a master key; `gateway secrets encrypt` reads a secret on stdin (never argv, so it
stays out of shell history and `ps`) and prints its `enc:v1:` value; `gateway secrets decrypt-check` says whether
a value decrypts under the current master key, without ever printing the plaintext.
"""

import argparse
import base64
import binascii
import getpass
import os
import re
import sys
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.settings import SecretError, resolve_secret

MASTER_KEY_ENV = "GATEWAY_MASTER_KEY"
PREFIX = "enc:"
VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
ASSOCIATED_DATA = b"gateway-secret-v1"
KEYGEN_HINT = "`gateway secrets keygen` makes one"
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    """Strict urlsafe base64, with or without padding; ValueError on anything else."""
    if not _URLSAFE_B64.fullmatch(text):
        raise ValueError("not urlsafe base64")
    bare = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except binascii.Error as exc:
        raise ValueError("not urlsafe base64") from exc


def generate_master_key() -> str:
    """A new random master key: 32 bytes, urlsafe base64 without padding (43 characters)."""
    return _b64encode(os.urandom(KEY_BYTES))


def load_master_key(environ: Mapping[str, str] = os.environ) -> bytes:
    """The 32-byte master key from GATEWAY_MASTER_KEY; SecretError (never showing the value) if unusable."""
    text = environ.get(MASTER_KEY_ENV, "").strip()
    if not text:
        raise SecretError(f"{MASTER_KEY_ENV} is not set: {KEYGEN_HINT}")
    try:
        key = _b64decode(text)
    except ValueError:
        raise SecretError(f"{MASTER_KEY_ENV} is not urlsafe base64: {KEYGEN_HINT}") from None
    if len(key) != KEY_BYTES:
        raise SecretError(f"{MASTER_KEY_ENV} must decode to {KEY_BYTES} bytes, not {len(key)}: {KEYGEN_HINT}")
    return key


def encrypt(plaintext: str, master_key: bytes) -> str:
    """`enc:v1:` + urlsafe_b64(nonce + ciphertext with tag); a fresh random nonce every time."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(master_key).encrypt(nonce, plaintext.encode("utf-8"), ASSOCIATED_DATA)
    return f"{PREFIX}{VERSION}:{_b64encode(nonce + sealed)}"


def decrypt(token: str, master_key: bytes, where: str) -> str:
    """The plaintext of an `enc:v1:` value; SecretError naming `where` (never the plaintext) if it cannot be read."""
    if not token.startswith(PREFIX):
        raise SecretError(f"{where}: not an encrypted secret (expected {PREFIX}{VERSION}:...)")
    version, _, body = token.removeprefix(PREFIX).partition(":")
    if version != VERSION:
        raise SecretError(f"{where}: unknown encrypted secret format {PREFIX}{version}: (this gateway reads enc:v1:)")
    try:
        raw = _b64decode(body.strip())
    except ValueError:
        raise SecretError(f"{where}: encrypted secret is not valid urlsafe base64") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise SecretError(f"{where}: encrypted secret is too short to be an enc:v1: value")
    try:
        plain = AESGCM(master_key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], ASSOCIATED_DATA)
        return plain.decode("utf-8")
    except (InvalidTag, UnicodeDecodeError):
        raise SecretError(f"cannot decrypt {where}: wrong {MASTER_KEY_ENV} or a damaged value") from None


def resolve(reference: str | None, where: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """`enc:` → decrypted with the master key from `environ`; `env:VAR`, a literal or None → as settings does."""
    if reference is None or not reference.startswith(PREFIX):
        return resolve_secret(reference, where)
    try:
        master_key = load_master_key(environ)
    except SecretError as exc:
        raise SecretError(f"{where}: {exc}") from None
    return decrypt(reference, master_key, where)


def add_commands(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `gateway secrets keygen|encrypt|decrypt-check` on the `gateway` command's subparsers."""
    secrets = subparsers.add_parser("secrets", help="encrypt upstream secrets for gateway.yaml")
    commands = secrets.add_subparsers(dest="secrets", required=True)
    keygen = commands.add_parser("keygen", help=f"print a new master key for {MASTER_KEY_ENV}")
    keygen.set_defaults(run=cmd_keygen)
    encrypt_cmd = commands.add_parser("encrypt", help="read a secret on stdin, print its enc:v1: value")
    encrypt_cmd.set_defaults(run=cmd_encrypt)
    check = commands.add_parser("decrypt-check", help="read an enc: value on stdin, say whether it decrypts")
    check.set_defaults(run=cmd_decrypt_check)


def _read_stdin(prompt: str) -> str:
    """Everything on stdin less one trailing newline; a hidden prompt if stdin is a terminal."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


def _fail(command: str, message: str) -> int:
    print(f"gateway secrets {command}: {message}", file=sys.stderr)
    return 2


def cmd_keygen(args: argparse.Namespace) -> int:
    print(generate_master_key())
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    try:
        master_key = load_master_key()
    except SecretError as exc:
        return _fail("encrypt", str(exc))
    plaintext = _read_stdin("secret to encrypt: ")
    if not plaintext:
        return _fail("encrypt", "no secret on stdin (pipe it in: the secret is never taken from the command line)")
    print(encrypt(plaintext, master_key))
    return 0


def cmd_decrypt_check(args: argparse.Namespace) -> int:
    try:
        master_key = load_master_key()
        token = _read_stdin("enc: value to check: ").strip()
        if not token:
            return _fail("decrypt-check", "no enc: value on stdin")
        decrypt(token, master_key, "the value on stdin")
    except SecretError as exc:
        return _fail("decrypt-check", str(exc))
    print("ok")
    return 0
