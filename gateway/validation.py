"""The shape checks the gateway makes on a request body before it governs it.

Only the fields the gateway acts on are checked (model, stream, and each endpoint's input); every other
field is passed through untouched for the upstream to judge. Errors are 400s that name the field.
"""

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest

Check = Callable[[Any], bool]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_text_input(value: Any) -> bool:
    return isinstance(value, (str, list))


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in value)
    )


COMMON: dict[str, tuple[Check, str]] = {
    "model": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "stream": (lambda v: isinstance(v, bool) or v is None, "a boolean"),
    "stream_options": (lambda v: isinstance(v, dict) or v is None, "an object"),
}

# endpoint → {field: (check, what it should be, required)}
ENDPOINT_FIELDS: dict[str, dict[str, tuple[Check, str, bool]]] = {
    "chat/completions": {"messages": (_is_messages, "a non-empty array of messages, each with a 'role'", True)},
    "completions": {"prompt": (_is_text_input, "a string or an array", True)},
    "embeddings": {"input": (_is_text_input, "a string or an array", True)},
    "responses": {"input": (_is_text_input, "a string or an array of input items", False)},
}


def validate(endpoint: str, body: Any) -> dict[str, Any]:
    """Return the body if it is fit to govern, else raise InvalidRequest naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if "model" not in body:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    for name, (check, what) in COMMON.items():
        if name in body and not check(body[name]):
            raise InvalidRequest(f"Invalid type for '{name}': expected {what}.", param=name, code="invalid_type")
    for name, (check, what, required) in ENDPOINT_FIELDS.get(endpoint, {}).items():
        if name not in body:
            if required:
                raise InvalidRequest(
                    f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
                )
        elif not check(body[name]):
            raise InvalidRequest(f"Invalid value for '{name}': expected {what}.", param=name, code="invalid_type")
    return body
