"""Run the gateway under uvicorn (uvloop + httptools), in one process or several workers, plus the audit
shipper process when the audit trail is configured."""

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

import uvicorn

from gateway.app import build_app
from gateway.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(settings: Settings, workers: int = 1) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    options = {
        "host": settings.listen.host,
        "port": settings.listen.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 10,
    }
    shipper: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if settings.audit is not None and settings.audit.run_shipper:
        from gateway.audit.process import ShipperProcess  # one shipper for all workers, in its own process

        shipper = ShipperProcess(settings.source)
    with shipper:
        _run(settings, workers, options)


def _run(settings: Settings, workers: int, options: dict[str, object]) -> None:
    if workers > 1:
        os.environ["GATEWAY_WORKERS"] = str(workers)  # the PII pool shares the cores out between workers
        os.environ["GATEWAY_CONFIG"] = settings.source
        os.environ["GATEWAY_HOST"], os.environ["GATEWAY_PORT"] = settings.listen.host, str(settings.listen.port)
        with _shared_metrics(settings):
            uvicorn.run("gateway.app:app_from_env", factory=True, workers=workers, **options)  # type: ignore[arg-type]
    else:
        uvicorn.run(build_app(settings), **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def _shared_metrics(settings: Settings) -> Iterator[None]:
    """Several workers, one /metrics: prometheus_client's multiprocess mode, in a directory new for this run
    (gateway.telemetry.prometheus), so whichever worker answers a scrape adds up every worker's values."""
    if not settings.telemetry.prometheus:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        yield
