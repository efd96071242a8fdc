"""Fuzzing every operation of the published /openapi.json (schemathesis) against the running gateway.

Whatever schemathesis sends, valid or not, with or without the key, the gateway answers with JSON and never
with a 5xx. The upstream behind the gateway is the mock; most generated bodies name a model the gateway does
not know, so every other body that names a model is aimed at one the gateway serves (`aim_at_served_models`),
and the fuzzer reaches the forwarding path and the mock too.

Bounded and deterministic: an explicit config (no schemathesis.toml is discovered), `derandomize=True`,
MAX_EXAMPLES per operation in the fuzzing phase. The coverage phase, which is not bounded by max_examples,
runs for every operation but POST /v1/responses, whose schema alone makes it about 9,000 requests (~30 s).
"""

import zlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from tests.conftest import GatewayUnderTest
from tests.servers import Mock

MAX_EXAMPLES = 25
NO_COVERAGE_PHASE = ["/v1/responses"]
SERVED_MODELS = ("mock-model", "gpt-4o-mini", "alias-model")


@pytest.fixture
def gateway_schema(gateway: GatewayUnderTest, upstream: Mock) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "seed": 0,
            "base-url": gateway.url,
            "headers": {"Authorization": f"Bearer {gateway.key}"},
            "request-timeout": 10,
            "operations": [
                {"include-path": path, "phases": {"coverage": {"enabled": False}}} for path in NO_COVERAGE_PHASE
            ],
        }
    )
    return schemathesis.openapi.from_url(gateway.url + "/openapi.json", config=config, timeout=10)


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 reads `node._nodeid`, which pytest 9.2 replaced with `node._id`: give it one to read."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("gateway_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_gateway_answers_any_generated_request_with_json_and_no_server_error(case: Any) -> None:
    aim_at_served_models(case)
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code == 200 and isinstance(case.body, dict) and case.body.get("stream") is True:
        assert content_type.startswith("text/event-stream"), content_type
        return
    assert content_type.startswith("application/json"), f"{response.status_code} {content_type}: {response.text[:200]}"
    assert isinstance(response.json(), dict)


def aim_at_served_models(case: Any) -> None:
    """Half the bodies with a string `model` (chosen by a stable hash) name a model the gateway serves instead."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        digest = zlib.crc32(body["model"].encode("utf-8", "surrogatepass"))
        if digest % 2:
            body["model"] = SERVED_MODELS[digest % len(SERVED_MODELS)]
