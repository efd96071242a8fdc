"""RSS of the gateway worker and of its audit shipper, idle and after rounds of steady sequential load.

    PYTHONPATH=. python -m load_tests.audit_rss [--rounds 3] [--seconds 20]

Starts the mock upstream and `gateway serve` with the shipped policies and an audit trail in the embedded
engine (a temporary directory, loopback only), prints RSS per process after each round, and stops both by PID.
"""

import argparse
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.servers import gateway_command, start

REPO = Path(__file__).resolve().parent.parent
CONFIG = """\
models:
  - {{name: mock-model, provider: openai_compatible, base_url: "{mock}/v1", api_key: "env:MK"}}
policies: {{dir: "{policies}"}}
audit: {{spool_dir: spool}}
"""


def rss(pid: int) -> dict[str, float]:
    server = psutil.Process(pid)
    out = {"server": server.memory_info().rss / 2**20}
    for child in server.children(recursive=True):
        name = "shipper" if "ship" in " ".join(child.cmdline()) else f"child {child.pid}"
        out[name] = child.memory_info().rss / 2**20
    return {name: round(mb, 1) for name, mb in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="audit-rss-"))
    mock = start(["-m", "load_tests.mock_upstream", "--api-key", "sk-mock"], "/health", work / "mock.log")
    config = work / "gateway.yaml"
    config.write_text(CONFIG.format(mock=mock.url, policies=REPO / "policies"))
    key = gateway_command("keys", "create", "--config", str(config), "--team", "bench").stdout.strip()
    gateway = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", work / "gw.log", {"MK": "sk-mock"})
    try:
        time.sleep(3)
        print("idle", rss(gateway.proc.pid), flush=True)
        sent = 0
        body = {"model": "mock-model", "messages": [{"role": "user", "content": "hello there"}]}
        with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}) as http:
            for _ in range(args.rounds):
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    http.post("/v1/chat/completions", json=body)
                    sent += 1
                print(f"after {sent} requests", rss(gateway.proc.pid), flush=True)
        print("shipped", httpx.get(gateway.url + "/readyz").json()["audit"]["shipper"]["shipped"])
    finally:
        gateway.stop()
        mock.stop()


if __name__ == "__main__":
    main()
