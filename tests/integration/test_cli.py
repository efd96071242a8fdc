"""The `gateway` command as an admin uses it: keys, configuration errors, the demo."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil

from tests.conftest import GatewayUnderTest, create_key
from tests.servers import UPSTREAM_SECRET, Mock, free_port, gateway_command

CONFIG = """\
models:
  - name: m1
    provider: openai
    base_url: http://127.0.0.1:9/v1
    api_key: env:SOME_KEY
audit: false  # this module does not test the audit trail (on by default)
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_keys_create_prints_only_the_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = gateway_command("keys", "create", "--config", str(config), "--team", "ml", "--name", "bot")
    assert result.returncode == 0
    key = result.stdout.strip()
    assert re.fullmatch(r"gk-[0-9a-f]{12}\.[A-Za-z0-9_\-]{43}", key)
    assert result.stdout == key + "\n"
    stored = (tmp_path / "gateway.keys.json").read_text()
    assert key not in stored and key.split(".")[1] not in stored
    assert oct((tmp_path / "gateway.keys.json").stat().st_mode)[-3:] == "600"


def test_keys_list_shows_team_name_state_but_no_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    key = create_key(
        config, "--team", "ml", "--name", "bot", "--models", "m1", "--expires", "2099-01-01", "--tags", "dev,ci"
    )
    listing = gateway_command("keys", "list", "--config", str(config), "--json")
    rows = json.loads(listing.stdout)
    assert rows == [
        {
            "id": key[3:15],
            "team": "ml",
            "name": "bot",
            "models": ["m1"],
            "created": rows[0]["created"],
            "expires": "2099-01-01T00:00:00+00:00",
            "revoked": None,
            "tags": ["ci", "dev"],
            "state": "active",
        }
    ]
    table = gateway_command("keys", "list", "--config", str(config)).stdout
    assert "bot" in table and "ci,dev" in table


def test_keys_create_refuses_unknown_models_and_bad_dates(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    unknown = gateway_command("keys", "create", "--config", str(config), "--team", "t", "--models", "m1,nope")
    bad_date = gateway_command("keys", "create", "--config", str(config), "--team", "t", "--expires", "soon")
    assert unknown.returncode == 2 and "nope" in unknown.stderr and unknown.stdout == ""
    assert bad_date.returncode == 2 and "--expires" in bad_date.stderr


def test_revoking_a_key_locks_it_out_of_a_running_gateway(gateway: GatewayUnderTest) -> None:
    key = create_key(gateway.config, "--team", "temp")
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        assert client.models.list().data
        result = gateway_command("keys", "revoke", "--config", str(gateway.config), key[3:15])
        assert result.returncode == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                client.models.list()
            except openai.AuthenticationError as exc:
                assert "revoked" in exc.message
                return
            time.sleep(0.1)
    raise AssertionError("the revoked key still works after 5 s")


def test_revoking_an_unknown_key_fails(tmp_path: Path) -> None:
    result = gateway_command("keys", "revoke", "--config", str(write_config(tmp_path)), "000000000000")
    assert result.returncode == 1


def test_a_broken_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, CONFIG.replace("    api_key: env:SOME_KEY\n", "    api_key: env:SOME_KEY\n    base_urll: x\n")
    )
    result = gateway_command("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:6: models[0].base_urll: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_upstream_secret_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOME_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(write_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "environment variable SOME_KEY is not set" in result.stderr


def test_demo_serves_a_first_answer_and_prints_ready_to_paste_snippets(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--demo", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        assert proc.stdout is not None
        while "Stop with Ctrl-C" not in output:
            line = proc.stdout.readline()
            assert line, f"demo exited early:\n{output}"
            output += line
        key = re.search(r"Bearer (gk-[^\"]+)", output).group(1)  # type: ignore[union-attr]
        assert "curl http://127.0.0.1" in output and "from openai import OpenAI" in output
        for _ in range(100):
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
                )
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert answer.json()["choices"][0]["message"]["content"] == "Echo: Hello"
        assert (tmp_path / ".gateway-demo" / "policies" / "baseline.yaml").exists()
        blocked = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}]},
        )
        assert blocked.status_code == 400 and blocked.json()["error"]["rule"] == "no-credentials"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)


def test_serve_with_several_workers_answers_through_each(gateway: GatewayUnderTest, upstream: Mock) -> None:
    port = free_port()
    env = {**os.environ, "TEST_UPSTREAM_KEY": UPSTREAM_SECRET}
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(gateway.config), "--port", str(port)]
    proc = subprocess.Popen([*command, "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.ConnectError:
                time.sleep(0.1)
        with openai.OpenAI(base_url=url + "/v1", api_key=gateway.key, max_retries=0) as client:
            answers = [
                client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": f"w{i}"}])
                for i in range(20)
            ]
        assert [a.choices[0].message.content for a in answers] == [f"Echo: w{i}" for i in range(20)]
        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
