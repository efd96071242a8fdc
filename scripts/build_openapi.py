"""Build gateway/openapi.json: the operations the gateway serves, cut out of OpenAI's official OpenAPI spec.

    python scripts/build_openapi.py            write gateway/openapi.json
    python scripts/build_openapi.py --check    exit 1 if the committed file differs from a fresh build

The source is `../shared/reference/openai-openapi.yaml` (beside the repository). Its paths are relative to
`https://api.openai.com/v1`, so each one is published here under `/v1`. The document keeps:

- the operations in OPERATIONS, copied as they are, less `x-oaiMeta` (the docs site's code samples);
- every component they `$ref`, transitively, and nothing else;
- the error responses the gateway itself produces (ERRORS), as the spec's `ErrorResponse`;
- a `bearerAuth` scheme on every /v1 operation, and our public `/healthz` and `/readyz`;
- the gateway's own `GET /v1/gateway/usage` (a key's rate limits and budgets).

Output is deterministic (sorted keys, one-space indent), so a test can compare it with a fresh build.
"""

import argparse
import datetime
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from gateway import __version__

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "reference" / "openai-openapi.yaml"
TARGET = ROOT / "gateway" / "openapi.json"
PREFIX = "/v1"

# (path in the source, method): the operations the gateway serves under PREFIX.
OPERATIONS = (
    ("/chat/completions", "post"),
    ("/completions", "post"),
    ("/embeddings", "post"),
    ("/responses", "post"),
    ("/models", "get"),
    ("/models/{model}", "get"),
)

# The statuses the gateway answers with a body of its own (gateway/errors.py).
ERRORS = {
    "400": "The request body is not valid JSON, or a field the gateway governs is missing or of the wrong type.",
    "401": "The API key is missing, unknown, revoked or expired.",
    "403": "This API key may not use the requested model.",
    "404": "The model or route does not exist.",
    "413": "The request body is larger than the gateway accepts.",
    "429": "A policy's rate limit or budget refused the request (`rate_limit_exceeded` with Retry-After, or "
    "`budget_exceeded`); the error names the policy and the rule.",
    "502": "The model server could not be reached.",
    "504": "The model server did not answer in time.",
}

DROPPED_KEYS = frozenset({"x-oaiMeta"})
REF_PREFIX = "#/components/"


def load_spec(path: Path = SOURCE) -> dict[str, Any]:
    with path.open("rb") as handle:
        return yaml.load(handle, Loader=yaml.CSafeLoader)  # type: ignore[no-any-return]


def build(spec: dict[str, Any]) -> dict[str, Any]:
    """The gateway's OpenAPI document, made from the official spec (a pure function of it)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, method in OPERATIONS:
        operation = _strip(spec["paths"][path][method])
        operation["security"] = [{"bearerAuth": []}]
        operation["responses"].update({status: _error(text) for status, text in ERRORS.items()})
        paths.setdefault(PREFIX + path, {})[method] = operation
    paths.update(health_paths())
    paths.update(usage_paths())
    components = referenced_components(spec, paths)
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "A virtual key made by `gateway keys create` (`gk-<id>.<secret>`).",
        }
    }
    return {
        "openapi": spec["openapi"],
        "info": info(spec["info"]),
        "servers": [{"url": "/"}],
        "tags": used_tags(spec, paths),
        "paths": paths,
        "components": components,
    }


def info(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "AI Governance Gateway",
        "version": __version__,
        "description": (
            "An OpenAI-compatible gateway: one endpoint in front of every model, with authentication, policy, "
            "limits and audit. The /v1 operations and their schemas are copied from OpenAI's official OpenAPI "
            f"description ({source['title']} {source['version']}, {source['license']['name']} licence); the error "
            "responses, the bearer scheme and the health routes are the gateway's own."
        ),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    }


def health_paths() -> dict[str, dict[str, Any]]:
    status = {"type": "string", "description": "`ok` while the process serves."}
    checks = {
        "type": "object",
        "description": "One entry per backend: `ok`, or what is wrong with it.",
        "additionalProperties": {"type": "string"},
    }
    healthy = {"type": "object", "properties": {"status": status}, "required": ["status"]}
    ready = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]}, "checks": checks},
        "required": ["status", "checks"],
    }
    return {
        "/healthz": {"get": _public("health", "Liveness: the process is up.", {"200": _json("Up.", healthy)})},
        "/readyz": {
            "get": _public(
                "readiness",
                "Readiness: every backend the gateway needs is ready.",
                {"200": _json("Ready.", ready), "503": _json("Not ready; `checks` says why.", ready)},
            )
        },
    }


def usage_paths() -> dict[str, dict[str, Any]]:
    counter = {
        "type": "object",
        "properties": {
            "policy": {"type": "string"},
            "rule": {"type": "string"},
            "kind": {"type": "string", "enum": ["rpm", "tpm", "concurrent", "budget"]},
            "scope": {"type": "string", "description": "e.g. `team=finance,key=k1`, or `all`"},
            "models": {"type": "array", "items": {"type": "string"}},
            "enforced": {"type": "boolean", "description": "false for a shadow rule (counted, never refusing)"},
            "limit": {"type": "integer"},
            "used": {"type": "integer"},
            "remaining": {"type": "integer"},
            "period": {"type": "string", "description": "budgets: 2026-11, 2026-W48 or 2026-11-24"},
            "limit_usd": {"type": "string"},
            "used_usd": {"type": "string", "description": "spent, plus reservations of requests in flight"},
            "remaining_usd": {"type": "string"},
            "resets_in_seconds": {"type": "number"},
        },
        "required": ["policy", "rule", "kind", "scope", "models", "enforced", "resets_in_seconds"],
    }
    usage = {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["gateway.usage"]},
            "key": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "team": {"type": "string"}},
                "required": ["id", "name", "team"],
            },
            "limits": {"type": "array", "items": counter},
            "budgets": {"type": "array", "items": counter},
            "backend": {"type": "object", "description": "where the counts live, and its state"},
        },
        "required": ["object", "key", "limits", "budgets"],
    }
    operation = {
        "operationId": "keyUsage",
        "summary": "The calling key's rate limits and budgets: what is used, what remains, when it resets.",
        "tags": ["Gateway"],
        "security": [{"bearerAuth": []}],
        "parameters": [
            {
                "name": "model",
                "in": "query",
                "required": False,
                "description": "only the limits that apply to this model (default: every model the key may use)",
                "schema": {"type": "string"},
            }
        ],
        "responses": {
            "200": _json("The key's limits and budgets.", usage),
            **{status: _error(text) for status, text in ERRORS.items()},
            "404": _error("The model does not exist (or this key may not use it)."),
        },
    }
    return {PREFIX + "/gateway/usage": {"get": operation}}


def referenced_components(spec: dict[str, Any], root: Any) -> dict[str, dict[str, Any]]:
    """Every `#/components/<section>/<name>` reachable from `root` through `$ref`s, copied and stripped."""
    found: dict[str, dict[str, Any]] = {}
    pending = list(refs(root))
    while pending:
        section, name = _split_ref(pending.pop())
        if name in found.get(section, {}):
            continue
        component = _strip(spec["components"][section][name])
        found.setdefault(section, {})[name] = component
        pending.extend(refs(component))
    return found


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def used_tags(spec: dict[str, Any], paths: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    names = {tag for item in paths.values() for op in item.values() for tag in op.get("tags", [])}
    return [tag for tag in spec.get("tags", []) if tag["name"] in names] + [
        {"name": "Health", "description": "Liveness and readiness of the gateway itself."},
        {"name": "Gateway", "description": "What the gateway itself tells a key about its limits and budgets."},
    ]


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False, default=_jsonable) + "\n"


def _split_ref(ref: str) -> tuple[str, str]:
    if not ref.startswith(REF_PREFIX):
        raise ValueError(f"unsupported $ref (only local components are): {ref}")
    section, _, name = ref.removeprefix(REF_PREFIX).partition("/")
    return section, name


def _strip(node: Any) -> Any:
    """A deep copy without the keys in DROPPED_KEYS."""
    if isinstance(node, dict):
        return {key: _strip(value) for key, value in node.items() if key not in DROPPED_KEYS}
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def _error(description: str) -> dict[str, Any]:
    return _json(description, {"$ref": "#/components/schemas/ErrorResponse"})


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _public(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "tags": ["Health"], "security": [], "responses": responses}


def _jsonable(value: Any) -> str:
    if isinstance(value, datetime.date):  # YAML turns an unquoted 2024-10-01 into a date
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=TARGET)
    parser.add_argument("--check", action="store_true", help="compare with the output file instead of writing it")
    args = parser.parse_args(argv)
    text = render(build(load_spec(args.source)))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run scripts/build_openapi.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
