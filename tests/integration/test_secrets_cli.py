"""`gateway secrets` as an admin uses it: make a master key, encrypt an upstream key, check it, never see it again."""

import os
import re
import subprocess
import sys

from gateway import secrets

SECRET = "sk-upstream-integration-0123456789"


def run_secrets(*args: str, stdin: str = "", master_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != secrets.MASTER_KEY_ENV}
    if master_key is not None:
        env[secrets.MASTER_KEY_ENV] = master_key
    return subprocess.run(
        [sys.executable, "-m", "gateway", "secrets", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def new_master_key() -> str:
    result = run_secrets("keygen")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_keygen_prints_only_a_32_byte_urlsafe_key() -> None:
    result = run_secrets("keygen")
    assert result.returncode == 0
    key = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_\-]{43}=?", key)
    assert result.stdout == key + "\n"
    assert len(secrets.load_master_key({secrets.MASTER_KEY_ENV: key})) == 32
    assert new_master_key() != key


def test_encrypt_prints_only_an_enc_value_that_decrypt_check_accepts() -> None:
    master = new_master_key()
    encrypted = run_secrets("encrypt", stdin=SECRET + "\n", master_key=master)
    assert encrypted.returncode == 0, encrypted.stderr
    token = encrypted.stdout.strip()
    assert re.fullmatch(r"enc:v1:[A-Za-z0-9_\-]+=*", token)
    assert encrypted.stdout == token + "\n"
    assert secrets.decrypt(token, secrets.load_master_key({secrets.MASTER_KEY_ENV: master}), "test") == SECRET

    checked = run_secrets("decrypt-check", stdin=token + "\n", master_key=master)
    assert (checked.returncode, checked.stdout) == (0, "ok\n")
    for output in [encrypted.stdout, encrypted.stderr, checked.stdout, checked.stderr]:
        assert SECRET not in output


def test_decrypt_check_with_the_wrong_master_key_exits_2_with_the_reason() -> None:
    token = run_secrets("encrypt", stdin=SECRET, master_key=new_master_key()).stdout.strip()
    checked = run_secrets("decrypt-check", stdin=token, master_key=new_master_key())
    assert checked.returncode == 2
    assert checked.stdout == ""
    assert "wrong GATEWAY_MASTER_KEY or a damaged value" in checked.stderr
    assert SECRET not in checked.stderr


def test_without_a_master_key_encrypt_and_decrypt_check_exit_2_and_say_how_to_make_one() -> None:
    token = run_secrets("encrypt", stdin=SECRET, master_key=new_master_key()).stdout.strip()
    for command, stdin in [("encrypt", SECRET), ("decrypt-check", token)]:
        result = run_secrets(command, stdin=stdin)
        assert result.returncode == 2
        assert result.stdout == ""
        assert "GATEWAY_MASTER_KEY is not set: `gateway secrets keygen` makes one" in result.stderr
        assert SECRET not in result.stderr


def test_encrypt_with_nothing_on_stdin_exits_2() -> None:
    result = run_secrets("encrypt", stdin="", master_key=new_master_key())
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no secret on stdin" in result.stderr
