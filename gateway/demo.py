"""`gateway serve --demo`: the gateway on embedded defaults, with the mock upstream, in one command.

It writes a config and a demo key into ./.gateway-demo/, copies the example policies shipped in policies/
there (once: edits are kept, and reloaded while the demo runs), starts the mock model server (load_tests)
on a free loopback port as a child process, prints a ready-to-paste curl and Python snippet, and serves.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from gateway import server, settings
from gateway.auth import keys

CONFIG = """\
# Written by `gateway serve --demo`: one model, served by the mock upstream in load_tests/.
listen: {{host: {host}, port: {port}}}
models:
  - name: gpt-4o-mini
    provider: openai_compatible
    base_url: http://127.0.0.1:{mock_port}/v1
    api_key: env:GATEWAY_DEMO_UPSTREAM_KEY
"""
POLICIES = "policies:\n  dir: policies\n"
SHIPPED_POLICIES = Path(__file__).resolve().parents[1] / "policies"

SNIPPET = """
Gateway demo ready on http://{host}:{port}  (mock upstream on 127.0.0.1:{mock_port}, files in {folder})

  curl http://{host}:{port}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python3 -c '
from openai import OpenAI
client = OpenAI(base_url="http://{host}:{port}/v1", api_key="{key}")
answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}])
print(answer.choices[0].message.content)'
{policies}
Stop with Ctrl-C.
"""
POLICY_HINT = """
Policies: {folder}/policies (edit them; the gateway reloads within a second). A credential is blocked:

  curl http://{host}:{port}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE"}}]}}'
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the mock upstream did not start on port {port}")


def run(host: str, port: int, folder: Path = Path(".gateway-demo")) -> int:
    folder.mkdir(exist_ok=True)
    mock_port = free_port()
    secret = "sk-demo-upstream"
    mock = subprocess.Popen(
        [sys.executable, "-m", "load_tests.mock_upstream", "--port", str(mock_port), "--api-key", secret]
    )
    try:
        wait_for_port(mock_port)
        config = folder / "gateway.yaml"
        with_policies = _copy_policies(folder / "policies")
        config.write_text(
            CONFIG.format(host=host, port=port, mock_port=mock_port) + (POLICIES if with_policies else "")
        )
        os.environ["GATEWAY_DEMO_UPSTREAM_KEY"] = secret
        loaded = settings.load(config)
        key = keys.create(loaded.keys_path, "demo", "demo", None, None)
        where = {"host": host, "port": port, "folder": folder.resolve(), "key": key}
        hint = POLICY_HINT.format(**where) if with_policies else ""
        print(SNIPPET.format(mock_port=mock_port, policies=hint, **where), flush=True)
        server.serve(loaded)
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    return 0


def _copy_policies(target: Path) -> bool:
    """The shipped example policies in the demo folder (kept if already there); False when there are none."""
    if target.is_dir():
        return True
    if not SHIPPED_POLICIES.is_dir():
        return False
    shutil.copytree(SHIPPED_POLICIES, target, ignore=shutil.ignore_patterns("*.md", "*.json"))
    return True
