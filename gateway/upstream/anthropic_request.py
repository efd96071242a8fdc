"""OpenAI chat completion request → Anthropic Messages request: a pure translation, no I/O.

    OpenAI (what the client sends)           Anthropic Messages (what the upstream gets)
    system and developer messages       →    top-level `system`, joined by blank lines
    user content: text, image_url       →    text blocks; image blocks (base64 from a data: URL, else url)
    assistant content and tool_calls    →    text blocks and tool_use blocks (arguments parsed into `input`)
    tool messages                       →    tool_result blocks in a user turn
    consecutive turns of one role       →    one turn: Anthropic wants user and assistant to alternate
    max_completion_tokens, max_tokens   →    max_tokens, 4096 when absent (Anthropic requires it)
    stop (a string or a list)           →    stop_sequences
    temperature, top_p, stream          →    the same names, values unchanged (Anthropic judges ranges)
    tools (function tools)              →    tools [{name, description, input_schema}]
    tool_choice auto/required/none/fn   →    {"type": auto / any / none / tool + name}
    parallel_tool_calls: false          →    tool_choice.disable_parallel_tool_use
    user                                →    metadata.user_id
    model                               →    the deployment's upstream model name

Refused with a 400 before anything is sent: `n` other than 1, the legacy `functions`, message roles and
content parts Anthropic has no place for (audio, files), and malformed tool calls.

Dropped, Anthropic having no equivalent: `response_format` (JSON mode: say so in the prompt or use a tool),
frequency and presence penalties, logit_bias, logprobs, seed, service_tier, store, metadata, modalities,
prediction, reasoning_effort, and `stream_options` (the stream always ends with a usage chunk, see
anthropic_stream).
"""

import re
from collections.abc import Mapping
from typing import Any

from gateway import codec
from gateway.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 4096
TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.+)", re.DOTALL)

Block = dict[str, Any]
Turn = dict[str, Any]


def messages_body(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Messages API body for the OpenAI chat completion `body`; `body` itself is left unchanged."""
    _refuse_unsupported(body)
    system, turns = conversation(body["messages"])
    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body), "messages": turns}
    if system:
        out["system"] = system
    out.update(_sampling(body))
    out.update(_tooling(body))
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise InvalidRequest(
            "Anthropic models return one choice per request: 'n' must be 1.", param="n", code="unsupported_value"
        )
    if body.get("functions"):
        raise InvalidRequest(
            "The legacy 'functions' parameter is not supported for this model; use 'tools'.",
            param="functions",
            code="unsupported_parameter",
        )


def _max_tokens(body: Mapping[str, Any]) -> Any:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return body[name]
    return DEFAULT_MAX_TOKENS


def _sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    out = {name: body[name] for name in ("temperature", "top_p") if body.get(name) is not None}
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    if body.get("stream") is True:
        out["stream"] = True
    return out


# ---------------------------------------------------------------- messages


def conversation(messages: list[Any]) -> tuple[str, list[Turn]]:
    """The system prompt and the alternating user/assistant turns of an OpenAI `messages` list."""
    system: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content"), index))
        elif role in ("user", "assistant", "tool"):
            _append(turns, *_turn(message, index))
        else:
            raise InvalidRequest(f"Anthropic models take no '{role}' messages.", param=f"messages[{index}].role")
    return "\n\n".join(text for text in system if text), [_compact(turn) for turn in turns]


def _turn(message: Mapping[str, Any], index: int) -> tuple[str, list[Block]]:
    if message["role"] == "user":
        return "user", _content_blocks(message.get("content"), index)
    if message["role"] == "assistant":
        text = _plain_text(message.get("content"), index)
        blocks = [{"type": "text", "text": text}] if text else []
        return "assistant", blocks + _tool_uses(message.get("tool_calls"), index)
    return "user", [_tool_result(message, index)]


def _append(turns: list[Turn], role: str, blocks: list[Block]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _compact(turn: Turn) -> Turn:
    """A turn that is one text block, written as Anthropic's own examples write it: content as a string."""
    content = turn["content"]
    if len(content) == 1 and content[0].keys() == {"type", "text"} and content[0]["type"] == "text":
        return {"role": turn["role"], "content": content[0]["text"]}
    return turn


def _plain_text(content: Any, index: int) -> str:
    """The text of system, developer and assistant content: a string, or text (and refusal) parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(_part_text(part, index) for part in content)
    raise _bad_content(index)


def _part_text(part: Any, index: int) -> str:
    if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
        text = part.get(part["type"])
        if isinstance(text, str):
            return text
    raise _bad_content(index)


def _content_blocks(content: Any, index: int) -> list[Block]:
    """User (and tool result) content as Anthropic blocks: text and images."""
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad_content(index)
    blocks = [_content_block(part, index) for part in content]
    return [block for block in blocks if block.get("text") != ""]


def _content_block(part: Any, index: int) -> Block:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        return _image(image.get("url") if isinstance(image, dict) else image, index)
    if isinstance(kind, str):
        raise InvalidRequest(f"Anthropic models take no '{kind}' content parts.", param=f"messages[{index}].content")
    raise _bad_content(index)


def _image(url: Any, index: int) -> Block:
    if isinstance(url, str) and url.startswith("data:"):
        match = DATA_URL.fullmatch(url)
        if match:
            source = {"type": "base64", "media_type": match["media"], "data": match["data"]}
            return {"type": "image", "source": source}
    elif isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("An image must be an http(s) URL or a base64 data: URL.", param=f"messages[{index}].content")


def _tool_uses(calls: Any, index: int) -> list[Block]:
    if not calls:
        return []
    if not isinstance(calls, list):
        raise _bad_tool_call(index)
    return [_tool_use(call, index) for call in calls]


def _tool_use(call: Any, index: int) -> Block:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise _bad_tool_call(index)
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(call.get("id"), str):
        raise _bad_tool_call(index)
    return {"type": "tool_use", "id": call["id"], "name": function.get("name"), "input": _input(function, index)}


def _input(function: Mapping[str, Any], index: int) -> dict[str, Any]:
    """A tool call's `arguments` (a JSON string) as the object Anthropic wants in `input`."""
    arguments = function.get("arguments") or "{}"
    try:
        parsed = codec.loads(arguments) if isinstance(arguments, str) else None
    except codec.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest("A tool call's 'arguments' must be a JSON object.", param=f"messages[{index}].tool_calls")
    return parsed


def _tool_result(message: Mapping[str, Any], index: int) -> Block:
    if not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest("A tool message needs a 'tool_call_id'.", param=f"messages[{index}].tool_call_id")
    content = message.get("content")
    result: Any = content if isinstance(content, str) else _content_blocks(content, index)
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": result}


def _bad_content(index: int) -> InvalidRequest:
    return InvalidRequest(
        "Invalid 'content': expected a string or an array of content parts.", param=f"messages[{index}].content"
    )


def _bad_tool_call(index: int) -> InvalidRequest:
    return InvalidRequest(
        "Invalid 'tool_calls': expected function calls with an 'id' and a 'function'.",
        param=f"messages[{index}].tool_calls",
    )


# ---------------------------------------------------------------- tools


def _tooling(body: Mapping[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    if not tools:
        return {}
    if not isinstance(tools, list):
        raise InvalidRequest("Invalid 'tools': expected an array of function tools.", param="tools")
    out: dict[str, Any] = {"tools": [_tool(tool, index) for index, tool in enumerate(tools)]}
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool(tool: Any, index: int) -> Block:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest("Anthropic models take function tools only.", param=f"tools[{index}]")
    out: Block = {"name": function["name"]}
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    out["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return {"type": TOOL_CHOICES[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise InvalidRequest("Invalid 'tool_choice': expected auto, required, none or a function.", param="tool_choice")
