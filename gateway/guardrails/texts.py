"""Where the text is in OpenAI API bodies: every string a model reads or writes, as a `Slot` to read and rewrite.

Guardrails and redaction work on plain strings; this module knows the wire shapes that carry them, so the
checks never do. Every function takes an already parsed body and is defensive: bodies come from clients
and upstreams, a field of the wrong shape is skipped, nothing raises.

    request_slots(endpoint, body)       the strings the model receives (messages, prompts, tool results)
    response_slots(endpoint, body)      the strings the model produced (a non-streamed answer)
    stream_slots(endpoint, event)       the text deltas of one SSE event, each on its stream key
    stream_ends(endpoint, event)        the stream keys (scopes) that event finishes
    stream_snapshots(endpoint, event)   full texts a Responses stream repeats (done events, response objects)
    stream_delta_event(...)             a new event carrying only some text on one stream key
    drop_logprobs(endpoint, body)       remove token log probabilities (they spell out the original text)

Stream keys name one logical text stream of a streamed answer, so the stream scanner keeps one carry-over
per key: chat "0:content", "0:refusal", "0:tool:1", "0:function"; completions "0:text"; Responses
"0:text:0", "0:refusal:0", "0:arguments", "0:input" (output index first, content index last). A scope
returned by `stream_ends` is a key, a key prefix ("0" ends every key of choice or output item 0), or
`EVERY_KEY`; `ended(key, scope)` tells whether it covers a key.

`endpoint` is one of "chat/completions", "completions", "embeddings", "responses".
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, cast

from gateway import codec
from gateway.guardrails import sse

EVERY_KEY = "*"

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
RESPONSES = "responses"


class Slot(NamedTuple):
    """One string inside a parsed body: container[key]."""

    container: dict[str, Any] | list[Any]
    key: str | int

    def get(self) -> str:
        text: str = cast(Any, self.container)[self.key]
        return text

    def set(self, text: str) -> None:
        cast(Any, self.container)[self.key] = text


# ---------------------------------------------------------------- shape helpers


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    """The dict items of `value` if it is a list, else nothing."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def _string(container: object, key: str) -> list[Slot]:
    """container[key] as a slot, if container is a dict and that value a string."""
    if isinstance(container, dict) and isinstance(container.get(key), str):
        return [Slot(container, key)]
    return []


def _strings(container: dict[str, Any], key: str) -> list[Slot]:
    """A string field, or each string of a list field (token-id arrays and other items skipped)."""
    value = container.get(key)
    if isinstance(value, str):
        return [Slot(container, key)]
    if isinstance(value, list):
        return [Slot(value, i) for i, item in enumerate(value) if isinstance(item, str)]
    return []


# Content part type → the field holding its text; image, audio and file parts carry none.
_PART_TEXT = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}


def _content(container: dict[str, Any], key: str) -> list[Slot]:
    """A content field: a string, or a list of content parts whose text parts are taken."""
    value = container.get(key)
    if isinstance(value, str):
        return [Slot(container, key)]
    return [slot for part in _dicts(value) for slot in _part(part)]


def _part(part: object) -> list[Slot]:
    """The text of one content part, if it is a text (or refusal) part."""
    if not isinstance(part, dict):
        return []
    kind = part.get("type")
    field = _PART_TEXT.get(kind) if isinstance(kind, str) else None
    return _string(part, field) if field is not None else []


def _index(container: dict[str, Any], position: int) -> int:
    """The item's own `index`, or its position in the list when it has none (or a nonsensical one)."""
    index = container.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else position


# ---------------------------------------------------------------- requests


def request_slots(endpoint: str, body: dict[str, Any]) -> list[Slot]:
    """Every string the model receives in a request body, in order."""
    if not isinstance(body, dict):
        return []
    if endpoint == CHAT:
        return [slot for message in _dicts(body.get("messages")) for slot in _chat_message(message)]
    if endpoint == COMPLETIONS:
        return _strings(body, "prompt") + _string(body, "suffix")
    if endpoint == EMBEDDINGS:
        return _strings(body, "input")
    if endpoint == RESPONSES:
        slots = _string(body, "instructions")
        if isinstance(body.get("input"), str):
            return [*slots, Slot(body, "input")]
        return slots + [slot for item in _dicts(body.get("input")) for slot in _response_item(item)]
    return []


def _chat_message(message: dict[str, Any]) -> list[Slot]:
    """A chat message's content (any role), an assistant's refusal and tool-call arguments."""
    slots = _content(message, "content")
    slots += _string(message, "refusal")
    for call in _dicts(message.get("tool_calls")):
        slots += _string(call.get("function"), "arguments")
    slots += _string(message.get("function_call"), "arguments")
    return slots


def _response_item(item: dict[str, Any]) -> list[Slot]:
    """A Responses input or output item: message content, tool call arguments or input, tool output."""
    kind = item.get("type")
    if kind == "message" or (kind is None and "role" in item):
        return _content(item, "content")
    if kind == "function_call":
        return _string(item, "arguments")
    if kind == "custom_tool_call":
        return _string(item, "input")
    if kind in ("function_call_output", "custom_tool_call_output"):
        return _content(item, "output")
    return []  # reasoning, image generation, web search, ... carry no text the model reads as such


# ---------------------------------------------------------------- responses


def response_slots(endpoint: str, body: dict[str, Any]) -> list[Slot]:
    """Every string the model produced in a non-streamed answer, in order."""
    if not isinstance(body, dict):
        return []
    if endpoint == CHAT:
        return [slot for choice in _dicts(body.get("choices")) for slot in _chat_output(choice.get("message"))]
    if endpoint == COMPLETIONS:
        return [slot for choice in _dicts(body.get("choices")) for slot in _string(choice, "text")]
    if endpoint == RESPONSES:
        slots = [slot for item in _dicts(body.get("output")) for slot in _response_output_item(item)]
        return slots + _string(body, "output_text")
    return []


def _chat_output(message: object) -> list[Slot]:
    if not isinstance(message, dict):
        return []
    slots = _string(message, "content") + _string(message, "refusal")
    for call in _dicts(message.get("tool_calls")):
        slots += _string(call.get("function"), "arguments")
    return slots + _string(message.get("function_call"), "arguments")


def _response_output_item(item: dict[str, Any]) -> list[Slot]:
    kind = item.get("type")
    if kind == "message":
        return _content(item, "content")
    if kind == "function_call":
        return _string(item, "arguments")
    if kind == "custom_tool_call":
        return _string(item, "input")
    return []


# ---------------------------------------------------------------- streams


def ended(key: str, scope: str) -> bool:
    """Whether a scope returned by `stream_ends` covers the stream key `key`."""
    return scope == EVERY_KEY or key == scope or key.startswith(scope + ":")


def stream_slots(endpoint: str, event: dict[str, Any]) -> list[tuple[str, Slot]]:
    """The text deltas of one parsed SSE event, each with its stream key (called for every event: kept lean)."""
    if not isinstance(event, dict):
        return []
    if endpoint == CHAT:
        return _chat_deltas(event)
    if endpoint == COMPLETIONS:
        return [
            (f"{i}:text", Slot(choice, "text")) for i, choice in _choices(event) if isinstance(choice.get("text"), str)
        ]
    if endpoint == RESPONSES:
        return _responses_delta(event)
    return []


def _choices(event: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    choices = event.get("choices")
    if not isinstance(choices, list):
        return []
    return [(_index(choice, position), choice) for position, choice in enumerate(choices) if isinstance(choice, dict)]


def _chat_deltas(event: dict[str, Any]) -> list[tuple[str, Slot]]:
    pairs: list[tuple[str, Slot]] = []
    for i, choice in _choices(event):
        delta = choice.get("delta")
        if not isinstance(delta, dict) or not delta:
            continue
        if isinstance(delta.get("content"), str):
            pairs.append((f"{i}:content", Slot(delta, "content")))
        if isinstance(delta.get("refusal"), str):
            pairs.append((f"{i}:refusal", Slot(delta, "refusal")))
        if "tool_calls" in delta:
            for position, call in enumerate(_dicts(delta["tool_calls"])):
                key = f"{i}:tool:{_index(call, position)}"
                pairs += [(key, slot) for slot in _string(call.get("function"), "arguments")]
        if "function_call" in delta:
            pairs += [(f"{i}:function", slot) for slot in _string(delta["function_call"], "arguments")]
    return pairs


def _where(event: dict[str, Any], field: str) -> int:
    value = event.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text_key(event: dict[str, Any]) -> str:
    return f"{_where(event, 'output_index')}:text:{_where(event, 'content_index')}"


def _refusal_key(event: dict[str, Any]) -> str:
    return f"{_where(event, 'output_index')}:refusal:{_where(event, 'content_index')}"


def _arguments_key(event: dict[str, Any]) -> str:
    return f"{_where(event, 'output_index')}:arguments"


def _input_key(event: dict[str, Any]) -> str:
    return f"{_where(event, 'output_index')}:input"


# Responses delta event type → how its stream key is named.
_RESPONSES_DELTAS: dict[str, Callable[[dict[str, Any]], str]] = {
    "response.output_text.delta": _text_key,
    "response.refusal.delta": _refusal_key,
    "response.function_call_arguments.delta": _arguments_key,
    "response.custom_tool_call_input.delta": _input_key,
}


def _responses_delta(event: dict[str, Any]) -> list[tuple[str, Slot]]:
    kind = event.get("type")
    key = _RESPONSES_DELTAS.get(kind) if isinstance(kind, str) else None
    if key is None:
        return []
    return [(key(event), slot) for slot in _string(event, "delta")]


_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def stream_ends(endpoint: str, event: dict[str, Any]) -> list[str]:
    """The stream keys this event finishes, as scopes (see `ended`): held-back text must be flushed first."""
    if not isinstance(event, dict):
        return []
    if endpoint in (CHAT, COMPLETIONS):
        if "error" in event:
            return [EVERY_KEY]
        return [str(i) for i, choice in _choices(event) if choice.get("finish_reason") is not None]
    if endpoint == RESPONSES:
        return _responses_ends(event)
    return []


def _responses_ends(event: dict[str, Any]) -> list[str]:
    kind = event.get("type")
    if kind in _RESPONSES_TERMINAL:
        return [EVERY_KEY]
    if kind == "response.output_text.done":
        return [_text_key(event)]
    if kind == "response.refusal.done":
        return [_refusal_key(event)]
    if kind == "response.content_part.done":
        return [_text_key(event), _refusal_key(event)]
    if kind == "response.function_call_arguments.done":
        return [_arguments_key(event)]
    if kind == "response.custom_tool_call_input.done":
        return [_input_key(event)]
    if kind == "response.output_item.done":
        return [str(_where(event, "output_index"))]
    return []


def stream_snapshots(endpoint: str, event: dict[str, Any]) -> list[Slot]:
    """Full texts a stream event repeats besides its deltas: the Responses API's done events, output items
    and response objects restate the whole text, so a redacting scanner must rewrite them too."""
    if endpoint != RESPONSES or not isinstance(event, dict):
        return []
    kind = event.get("type")
    if kind == "response.output_text.done":
        return _string(event, "text")
    if kind == "response.refusal.done":
        return _string(event, "refusal")
    if kind == "response.function_call_arguments.done":
        return _string(event, "arguments")
    if kind == "response.custom_tool_call_input.done":
        return _string(event, "input")
    if kind in ("response.content_part.added", "response.content_part.done"):
        return _part(event.get("part"))
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = event.get("item")
        return _response_output_item(item) if isinstance(item, dict) else []
    response = event.get("response")
    return response_slots(RESPONSES, response) if isinstance(response, dict) else []


def stream_delta_event(endpoint: str, template: dict[str, Any], key: str, text: str) -> dict[str, Any] | None:
    """A new stream event of the same shape as `template` (an earlier event with a delta on `key`) that
    carries only `text` on `key`: how a scanner emits text it held back when nothing else will carry it."""
    if endpoint == RESPONSES:
        event = {**template, "delta": text}
        if "logprobs" in event:
            event["logprobs"] = []
        return event
    parts = key.split(":")
    if endpoint not in (CHAT, COMPLETIONS) or not parts[0].isdigit():
        return None
    i = int(parts[0])
    if endpoint == COMPLETIONS:
        choice: dict[str, Any] = {"text": text, "index": i, "logprobs": None, "finish_reason": None}
    else:
        choice = {"index": i, "delta": _chat_delta_of(parts[1:], text), "logprobs": None, "finish_reason": None}
    # The template's fields in their order (id, model, ...), its choices replaced, a usage left at null.
    event = {name: None if name == "usage" else value for name, value in template.items()}
    event["choices"] = [choice]
    return event


def _chat_delta_of(kind: list[str], text: str) -> dict[str, Any]:
    if kind[:1] == ["tool"] and len(kind) == 2 and kind[1].isdigit():
        return {"tool_calls": [{"index": int(kind[1]), "function": {"arguments": text}}]}
    if kind == ["function"]:
        return {"function_call": {"arguments": text}}
    if kind == ["refusal"]:
        return {"refusal": text}
    return {"content": text}


def drop_logprobs(endpoint: str, body: dict[str, Any]) -> bool:
    """Remove the token log probabilities of an answer or stream event: they spell out the original tokens
    (and their alternatives), so text that was redacted must not keep them. True if there were any."""
    if not isinstance(body, dict):
        return False
    if endpoint in (CHAT, COMPLETIONS):
        return _clear(list(_dicts(body.get("choices"))), None)
    if endpoint != RESPONSES:
        return False
    parts = [body]
    if isinstance(body.get("part"), dict):
        parts.append(body["part"])
    items = [body["item"]] if isinstance(body.get("item"), dict) else []
    for holder in (body, body.get("response")):
        if isinstance(holder, dict):
            items += _dicts(holder.get("output"))
    parts += [part for item in items for part in _dicts(item.get("content"))]
    return _clear(parts, [])


def _clear(containers: list[dict[str, Any]], empty: list[Any] | None) -> bool:
    """Set each container's non-empty `logprobs` to `empty`; True if any was set."""
    cleared = False
    for container in containers:
        if container.get("logprobs"):
            container["logprobs"] = None if empty is None else []
            cleared = True
    return cleared


def sse_texts(endpoint: str, events: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """The (stream key, text delta) pairs of raw SSE events, skipping [DONE] and events that are not JSON."""
    for raw in events:
        data = sse.event_data(raw)
        event = codec.loads_object(data) if data and data != sse.DONE else None
        for key, slot in stream_slots(endpoint, event) if event is not None else ():
            yield key, slot.get()
