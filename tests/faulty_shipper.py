"""The real audit shipper around a sink that fails: every insert raises for the first `--fail-for` seconds.

    python -m tests.faulty_shipper --config gateway.yaml --fail-for 30

It is what `gateway audit ship` runs, with the store wrapped, so a test can take the sink down and bring it
back while the gateway serves. It stops at the end of stdin, like the shipper `gateway serve` starts.
"""

import argparse
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway import settings as settings_module
from gateway.audit import shipper
from gateway.audit.store import AuditStore


class FailingStore:
    """The real store, whose inserts fail until `until` (monotonic time)."""

    def __init__(self, store: AuditStore, until: float) -> None:
        self.store = store
        self.until = until
        self.refused = 0

    def insert(self, events: Sequence[Mapping[str, Any]]) -> int:
        if time.monotonic() < self.until:
            self.refused += 1
            raise ConnectionError("injected fault: the audit sink is down")
        return self.store.insert(events)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--fail-for", type=float, required=True)
    args = parser.parse_args()
    settings = settings_module.load(args.config)
    assert settings.audit is not None
    until = time.monotonic() + args.fail_for
    real = shipper.store_factory(settings)
    stop = threading.Event()
    threading.Thread(target=shipper._stop_at_end_of_stdin, args=(stop,), daemon=True).start()
    directory = settings.near(settings.audit.spool_dir)
    shipper.Shipper(lambda: FailingStore(real(), until), directory, stop).run()  # type: ignore[arg-type, return-value]


if __name__ == "__main__":
    main()
