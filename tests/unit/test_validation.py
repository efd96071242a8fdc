"""Request shape checks: only governed fields, each error naming its param."""

import pytest

from gateway.errors import InvalidRequest
from gateway.validation import validate

CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    ("endpoint", "body", "param"),
    [
        ("chat/completions", [], None),
        ("chat/completions", {"messages": CHAT["messages"]}, "model"),
        ("chat/completions", {**CHAT, "model": ""}, "model"),
        ("chat/completions", {**CHAT, "model": 3}, "model"),
        ("chat/completions", {**CHAT, "stream": "yes"}, "stream"),
        ("chat/completions", {**CHAT, "stream_options": 1}, "stream_options"),
        ("chat/completions", {"model": "m"}, "messages"),
        ("chat/completions", {"model": "m", "messages": [{"content": "no role"}]}, "messages"),
        ("completions", {"model": "m"}, "prompt"),
        ("embeddings", {"model": "m", "input": 5}, "input"),
        ("responses", {"model": "m", "input": {"x": 1}}, "input"),
    ],
)
def test_bad_bodies_name_the_bad_param(endpoint: str, body: object, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(endpoint, body)
    assert caught.value.param == param
    assert caught.value.status == 400


def test_ungoverned_fields_pass_untouched() -> None:
    body = {**CHAT, "temperature": "anything", "vendor_extension": {"a": 1}}
    assert validate("chat/completions", body) is body
    assert validate("responses", {"model": "m", "previous_response_id": "r"})
