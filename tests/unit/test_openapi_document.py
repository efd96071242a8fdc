"""gateway/openapi.json: a fresh build of scripts/build_openapi.py, describing exactly the routes the gateway serves."""

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.app import OPENAPI, Gateway
from gateway.routes import routes
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNDOCUMENTED = {("/openapi.json", "get")}  # the document itself
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
GATEWAY_ERRORS = {"400", "401", "403", "404", "413", "502", "504"}


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_openapi", ROOT / "scripts" / "build_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def document() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())  # type: ignore[no-any-return]


def documented_operations() -> set[tuple[str, str]]:
    return {(path, method) for path, item in document()["paths"].items() for method in item if method in HTTP_METHODS}


def routed_operations() -> set[tuple[str, str]]:
    """(path, method) for every route, with Starlette's `{name:convertor}` written as OpenAPI's `{name}`."""
    found = set()
    settings = Settings(models=(), source="/nonexistent/gateway.yaml")
    for route in routes(Gateway(settings)):
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        found |= {(path, method.lower()) for method in route.methods or () if method != "HEAD"}
    return found


def test_committed_document_equals_a_fresh_build() -> None:
    builder = load_builder()
    if not builder.SOURCE.exists():
        pytest.skip(f"OpenAI's spec is not at {builder.SOURCE} (../shared/reference beside the repository)")
    fresh = builder.render(builder.build(builder.load_spec(builder.SOURCE)))
    assert OPENAPI.read_text() == fresh, "gateway/openapi.json is stale: run scripts/build_openapi.py"


def test_every_documented_operation_is_one_the_gateway_routes() -> None:
    assert documented_operations() <= routed_operations()


def test_every_routed_operation_is_documented() -> None:
    assert routed_operations() - UNDOCUMENTED <= documented_operations()


def test_every_ref_resolves_within_the_document() -> None:
    refs = list(collect_refs(document()))
    assert refs
    unresolved = sorted({ref for ref in refs if not resolves(document(), ref)})
    assert unresolved == []


def test_only_referenced_components_are_kept() -> None:
    doc = document()
    referenced = {ref for ref in collect_refs(doc) if ref.startswith("#/components/")}
    kept = {
        f"#/components/{section}/{name}"
        for section, entries in doc["components"].items()
        if section != "securitySchemes"
        for name in entries
    }
    assert kept == referenced


def test_every_v1_operation_needs_a_bearer_key_and_documents_the_gateway_errors() -> None:
    doc = document()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method in documented_operations():
        operation = doc["paths"][path][method]
        if not path.startswith("/v1/"):
            assert operation["security"] == [], path
            continue
        assert operation["security"] == [{"bearerAuth": []}], path
        assert GATEWAY_ERRORS <= set(operation["responses"]), path
        for status in GATEWAY_ERRORS:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


def test_document_keeps_the_openapi_version_of_the_official_spec() -> None:
    assert document()["openapi"].startswith("3.1.")
    assert document()["servers"] == [{"url": "/"}]


def collect_refs(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from collect_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from collect_refs(item)


def resolves(doc: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
