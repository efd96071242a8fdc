"""Bodies the gateway makes itself validate against OpenAI's official OpenAPI spec.

Errors (400 to 431) and the model list and card are made by the gateway, not by an upstream, so an SDK that
parses them by the official spec must be able to. The spec is `../shared/reference/openai-openapi.yaml`; it
writes `nullable: true` inside a 3.1 document, which is read here as a union with null (DESIGN.md).
"""

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.errors import PolicyViolation
from tests.conftest import GatewayUnderTest

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "openai-openapi.yaml"
SPEC_URI = "urn:openai-openapi"
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "hello"}]

pytestmark = pytest.mark.skipif(not SPEC.exists(), reason=f"OpenAI's spec is not at {SPEC}")

Exchange = Callable[[httpx.Client, GatewayUnderTest], httpx.Response]


@cache
def spec_registry() -> Registry:
    """The spec's component schemas, `nullable: true` made a union with null, as one resource for `$ref`s."""
    with SPEC.open("rb") as handle:
        spec = yaml.load(handle, Loader=yaml.CSafeLoader)
    schemas = {name: with_null_unions(schema) for name, schema in spec["components"]["schemas"].items()}
    resource = Resource.from_contents({"components": {"schemas": schemas}}, default_specification=DRAFT202012)
    return Registry().with_resource(SPEC_URI, resource)


def with_null_unions(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` → `anyOf: [schema, {type: null}]`, everywhere in a schema."""
    if isinstance(node, list):
        return [with_null_unions(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: with_null_unions(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def validator(schema_name: str) -> jsonschema.protocols.Validator:
    schema = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(
        schema, registry=spec_registry(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(content: bytes, key: Callable[[GatewayUnderTest], str] = lambda g: g.key) -> Exchange:
    return lambda http, g: http.post(
        CHAT, content=content, headers={**auth(key(g)), "content-type": "application/json"}
    )


# name: (how to provoke it, expected status, the spec's schema for the body)
CASES: dict[str, tuple[Exchange, int, str]] = {
    "400 malformed JSON": (chat(b'{"model": '), 400, "ErrorResponse"),
    "400 missing model": (chat(b'{"messages": []}'), 400, "ErrorResponse"),
    "400 wrong type": (chat(b'{"model": 5, "messages": []}'), 400, "ErrorResponse"),
    "401 no key": (lambda http, g: http.get("/v1/models"), 401, "ErrorResponse"),
    "401 unknown key": (
        lambda http, g: http.get("/v1/models", headers=auth("gk-000000000000.nope")),
        401,
        "ErrorResponse",
    ),
    "401 revoked key": (lambda http, g: http.get("/v1/models", headers=auth(g.revoked_key)), 401, "ErrorResponse"),
    "403 model not allowed": (
        chat(b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}', lambda g: g.limited_key),
        403,
        "ErrorResponse",
    ),
    "404 unknown model": (
        chat(b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'),
        404,
        "ErrorResponse",
    ),
    "404 unknown model card": (
        lambda http, g: http.get("/v1/models/no-such-model", headers=auth(g.key)),
        404,
        "ErrorResponse",
    ),
    "404 unknown route": (lambda http, g: http.get("/v1/no-such-route", headers=auth(g.key)), 404, "ErrorResponse"),
    "405 wrong method": (lambda http, g: http.get(CHAT, headers=auth(g.key)), 405, "ErrorResponse"),
    "413 body too large": (chat(b'{"model": "' + b"m" * 70_000 + b'"}'), 413, "ErrorResponse"),
    "431 too many headers": (
        lambda http, g: http.get("/v1/models", headers={**auth(g.key), **{f"x-h{i}": "v" for i in range(150)}}),
        431,
        "ErrorResponse",
    ),
    "200 model list": (lambda http, g: http.get("/v1/models", headers=auth(g.key)), 200, "ListModelsResponse"),
    "200 model list of a limited key": (
        lambda http, g: http.get("/v1/models", headers=auth(g.limited_key)),
        200,
        "ListModelsResponse",
    ),
    "200 model card": (lambda http, g: http.get("/v1/models/mock-model", headers=auth(g.key)), 200, "Model"),
}


@pytest.fixture
def http(gateway: GatewayUnderTest) -> Any:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize("case", list(CASES))
def test_gateway_made_body_validates_against_the_official_spec(
    case: str, http: httpx.Client, gateway: GatewayUnderTest
) -> None:
    exchange, status, schema_name = CASES[case]
    response = exchange(http, gateway)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator(schema_name).iter_errors(response.json())
    ]
    assert errors == [], f"{schema_name} rejects {response.text}"


def test_the_spec_reading_turns_nullable_into_a_union_with_null() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}
    assert with_null_unions(schema) == {
        "type": "object",
        "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
    }


def test_the_spec_schemas_reject_a_body_that_is_not_an_openai_error() -> None:
    assert not validator("ErrorResponse").is_valid({"error": {"message": "x", "type": "t"}})
    assert not validator("Model").is_valid({"id": "m", "object": "model", "created": "yesterday", "owned_by": "o"})
    assert not validator("ListModelsResponse").is_valid({"object": "list", "data": [{"id": "m", "object": "model"}]})


def test_a_policy_violation_is_an_openai_error_body() -> None:
    body = PolicyViolation("Blocked.", policy="baseline", rule="no-credentials").body()
    errors = list(validator("ErrorResponse").iter_errors(body))
    assert errors == [], errors
