"""Active health checks: probe each deployment that declares `health_check` and tell the router what it saw.

A deployment is healthy while its probe answers 2xx within the timeout; an unhealthy one is skipped by the
router until a later probe succeeds. One task per worker process probes all such deployments every interval.
"""

import asyncio
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from gateway.errors import GatewayError
from gateway.settings import Deployment, HealthCheck, Settings, Timeouts
from gateway.upstream.client import UpstreamClient, UpstreamRequest
from gateway.upstream.openai_wire import USER_AGENT
from gateway.upstream.router import Router

log = logging.getLogger("gateway.health")


def probe_url(deployment: Deployment, check: HealthCheck) -> str:
    parts = urlsplit(deployment.base_url)
    return f"{parts.scheme}://{parts.netloc}{check.path}"


async def probe(client: UpstreamClient, deployment: Deployment, check: HealthCheck, secret: str | None) -> bool:
    headers = {"user-agent": USER_AGENT}
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    timeout = Timeouts(connect=check.timeout, read=check.timeout, total=check.timeout)
    try:
        response = await client.send(UpstreamRequest("GET", probe_url(deployment, check), headers, None, timeout))
        await response.read()
    except GatewayError:
        return False
    return 200 <= response.status < 300


async def run(
    client: UpstreamClient, router: Router, settings: Settings, secrets: Mapping[Deployment, str | None]
) -> None:
    """Probe forever (until cancelled); each deployment on its own interval."""
    checked = [d for m in settings.models for d in m.deployments if d.health_check is not None]
    await asyncio.gather(*(_watch(client, router, d, secrets.get(d)) for d in checked))


async def _watch(client: UpstreamClient, router: Router, deployment: Deployment, secret: str | None) -> None:
    check = deployment.health_check
    assert check is not None
    while True:
        healthy = await probe(client, deployment, check, secret)
        if healthy != router.state(deployment).healthy:
            log.warning("deployment %s is now %s", deployment.label, "healthy" if healthy else "unhealthy")
        router.set_health(deployment, healthy)
        await asyncio.sleep(check.interval)
