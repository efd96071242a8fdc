"""Every refusal and failure reaches the app as the openai SDK exception it would get from OpenAI itself."""

import httpx
import openai
import pytest

from tests.conftest import GatewayUnderTest
from tests.servers import UPSTREAM_SECRET, Mock

HELLO = [{"role": "user", "content": "hello"}]


def sdk(gateway: GatewayUnderTest, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0, timeout=20)


def assert_error_body(exc: openai.APIStatusError, status: int, code: str) -> None:
    assert exc.status_code == status
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert "Traceback" not in exc.response.text


@pytest.mark.parametrize("which", ["invalid", "revoked", "expired"])
def test_bad_keys_are_authentication_errors(gateway: GatewayUnderTest, upstream: Mock, which: str) -> None:
    key = {"invalid": "gk-000000000000.nope", "revoked": gateway.revoked_key, "expired": gateway.expired_key}[which]
    with sdk(gateway, key) as client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="mock-model", messages=HELLO)
    assert_error_body(caught.value, 401, "invalid_api_key")
    assert which in caught.value.message or which == "invalid"
    assert upstream.requests() == []


def test_missing_key_is_401(gateway: GatewayUnderTest) -> None:
    response = httpx.post(gateway.base_url + "/chat/completions", json={"model": "mock-model", "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_model_the_key_may_not_use_is_permission_denied(gateway: GatewayUnderTest, upstream: Mock) -> None:
    with sdk(gateway, gateway.limited_key) as client, pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert_error_body(caught.value, 403, "model_not_allowed")
    assert upstream.requests() == []


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert_error_body(caught.value, 404, "model_not_found")
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_invalid_fields_are_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="mock-model", messages=[])
    assert_error_body(caught.value, 400, "invalid_type")
    assert caught.value.param == "messages"


def test_an_oversized_body_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "x" * 70_000}])
    assert_error_body(caught.value, 413, "payload_too_large")


def test_an_unreachable_upstream_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="unreachable-model", messages=HELLO)
    assert_error_body(caught.value, 502, "upstream_unreachable")


def test_an_upstream_that_drops_the_connection_is_502(client: openai.OpenAI, upstream: Mock) -> None:
    upstream.faults({"faulty-model": {"disconnect": "before"}})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="faulty-model", messages=HELLO)
    assert_error_body(caught.value, 502, "upstream_unreachable")


def test_an_upstream_that_does_not_answer_in_time_is_504(client: openai.OpenAI, upstream: Mock) -> None:
    upstream.faults({"slow-model": {"hang": True}})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="slow-model", messages=HELLO)
    assert_error_body(caught.value, 504, "upstream_timeout")


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, openai.BadRequestError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_upstream_errors_pass_through_with_status_and_body(
    client: openai.OpenAI, upstream: Mock, status: int, exception: type[openai.APIStatusError]
) -> None:
    error = {"error": {"message": f"upstream says {status}", "type": "upstream", "param": None, "code": "x"}}
    upstream.faults({"faulty-model": {"status": status, "body": error}})
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model="faulty-model", messages=HELLO)
    assert caught.value.status_code == status
    assert caught.value.response.json() == error


def test_an_upstream_error_never_shows_the_upstream_key(client: openai.OpenAI, upstream: Mock) -> None:
    leaky = {
        "error": {"message": f"Incorrect API key provided: {UPSTREAM_SECRET}", "type": "x", "param": None, "code": None}
    }
    upstream.faults({"faulty-model": {"status": 401, "body": leaky}})
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="faulty-model", messages=HELLO)
    assert UPSTREAM_SECRET not in caught.value.response.text
    assert "***" in caught.value.response.text


def test_a_stream_the_upstream_breaks_off_ends_with_an_error_event(client: openai.OpenAI, upstream: Mock) -> None:
    upstream.faults({"faulty-model": {"disconnect": "mid_stream", "after_chunks": 2}})
    received = []
    with pytest.raises(openai.APIError, match="broke off"):
        for chunk in client.chat.completions.create(model="faulty-model", messages=HELLO, stream=True):
            received.append(chunk)
    assert len(received) == 2
