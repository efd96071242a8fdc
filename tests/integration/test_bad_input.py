"""Bad input never hurts the server: each bad request gets OpenAI's error JSON and the gateway keeps serving.

Every case asserts the status and the body `{"error": {"message", "type", "param", "code"}}` a client sees,
then that a normal request still succeeds and that the gateway logged no traceback meanwhile. What the SDK
cannot send (broken JSON, stray bytes, chunked bodies, header floods, stalled bodies) is sent with raw httpx
or a raw socket.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayUnderTest
from tests.servers import Mock

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "still there?"}]
GOOD_CHAT = {"model": "mock-model", "messages": MESSAGES}
LIMIT = 65536  # server.max_body_bytes in the test config
BODY_TIMEOUT = 1.5  # server.body_timeout in the test config


@dataclass
class Watch:
    """Checks, after a bad request, that the gateway still answers a normal one and logged no traceback."""

    gateway: GatewayUnderTest
    log_offset: int

    def still_serving(self) -> None:
        response = httpx.post(self.gateway.url + CHAT, json=GOOD_CHAT, headers=auth(self.gateway.key), timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Echo: still there?"
        assert "Traceback" not in self.gateway.process.output()[self.log_offset :]


@pytest.fixture
def watch(gateway: GatewayUnderTest, upstream: Mock) -> Watch:
    return Watch(gateway, len(gateway.process.output()))


@pytest.fixture
def http(gateway: GatewayUnderTest) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers=auth(gateway.key), timeout=10) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return assert_error_body(response.text, code, param)


def assert_error_body(text: str, code: str, param: str | None) -> dict[str, Any]:
    assert "Traceback" not in text and 'File "' not in text
    body = json.loads(text)
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)
    return error  # type: ignore[no-any-return]


def as_bytes(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# name: (endpoint, body, code, param) — every one is a 400
BAD_BODIES: dict[str, tuple[str, bytes | dict[str, Any], str, str | None]] = {
    "malformed JSON": (CHAT, b'{"model": "mock-model", "messages": [', "invalid_json", None),
    "empty body": (CHAT, b"", "invalid_json", None),
    "JSON nested deeper than the parser allows": (CHAT, b"[" * 30_000 + b"]" * 30_000, "invalid_json", None),
    "non-UTF-8 bytes": (
        CHAT,
        b'{"model": "mock-model", "messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}',
        "invalid_json",
        None,
    ),
    "JSON array": (CHAT, b'[{"model": "mock-model"}]', "invalid_request", None),
    "JSON string": (CHAT, b'"mock-model"', "invalid_request", None),
    "JSON null": (CHAT, b"null", "invalid_request", None),
    "model is a number": (CHAT, {"model": 5, "messages": MESSAGES}, "invalid_type", "model"),
    "model is empty": (CHAT, {"model": "", "messages": MESSAGES}, "invalid_type", "model"),
    "messages is a string": (CHAT, {"model": "mock-model", "messages": "hi"}, "invalid_type", "messages"),
    "messages is empty": (CHAT, {"model": "mock-model", "messages": []}, "invalid_type", "messages"),
    "message without a role": (
        CHAT,
        {"model": "mock-model", "messages": [{"content": "x"}]},
        "invalid_type",
        "messages",
    ),
    "stream is a string": (CHAT, {**GOOD_CHAT, "stream": "yes"}, "invalid_type", "stream"),
    "stream_options is a list": (CHAT, {**GOOD_CHAT, "stream_options": []}, "invalid_type", "stream_options"),
    "missing model": (CHAT, {"messages": MESSAGES}, "missing_required_parameter", "model"),
    "missing messages": (CHAT, {"model": "mock-model"}, "missing_required_parameter", "messages"),
    "completion prompt is a number": (
        "/v1/completions",
        {"model": "mock-model", "prompt": 7},
        "invalid_type",
        "prompt",
    ),
    "completion without a prompt": ("/v1/completions", {"model": "mock-model"}, "missing_required_parameter", "prompt"),
    "embedding input is an object": ("/v1/embeddings", {"model": "mock-model", "input": {}}, "invalid_type", "input"),
    "response input is a number": ("/v1/responses", {"model": "mock-model", "input": 1}, "invalid_type", "input"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_body_gets_a_400_naming_the_problem_and_the_server_keeps_serving(
    case: str, http: httpx.Client, watch: Watch
) -> None:
    endpoint, body, code, param = BAD_BODIES[case]
    response = http.post(endpoint, content=as_bytes(body), headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code, param)
    watch.still_serving()


def test_body_over_the_limit_with_an_honest_content_length_gets_413(http: httpx.Client, watch: Watch) -> None:
    body = as_bytes({"model": "mock-model", "messages": [{"role": "user", "content": "a" * LIMIT}]})
    response = http.post(CHAT, content=body)
    assert response.request.headers["content-length"] == str(len(body))
    assert_openai_error(response, 413, "payload_too_large")
    assert response.headers["connection"] == "close"
    watch.still_serving()


def test_chunked_body_over_the_limit_without_content_length_gets_413(http: httpx.Client, watch: Watch) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "mock-model", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * 8192
        yield b'"}]}'

    response = http.post(CHAT, content=chunks())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert_openai_error(response, 413, "payload_too_large")
    watch.still_serving()


def test_chunked_body_under_the_limit_is_served(http: httpx.Client, watch: Watch) -> None:
    body = as_bytes(GOOD_CHAT)
    response = http.post(CHAT, content=iter([body[:10], body[10:]]))
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text
    watch.still_serving()


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/chat/completions/extra", "/v2/chat/completions"])
def test_unknown_route_gets_404(path: str, http: httpx.Client, watch: Watch) -> None:
    assert_openai_error(http.post(path, json=GOOD_CHAT), 404, "unknown_route")
    watch.still_serving()


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CHAT), ("PUT", "/v1/embeddings"), ("POST", "/v1/models"), ("DELETE", "/v1/models/mock-model")],
)
def test_wrong_method_gets_405(method: str, path: str, http: httpx.Client, watch: Watch) -> None:
    response = http.request(method, path)
    assert_openai_error(response, 405, "method_not_allowed")
    assert response.headers["allow"]
    watch.still_serving()


def test_header_flood_gets_431(http: httpx.Client, watch: Watch) -> None:
    flood = {f"x-flood-{i}": "v" for i in range(300)}
    assert_openai_error(http.post(CHAT, json=GOOD_CHAT, headers=flood), 431, "request_header_fields_too_large")
    watch.still_serving()


def test_one_huge_header_gets_431(http: httpx.Client, watch: Watch) -> None:
    response = http.get("/v1/models", headers={"x-huge": "h" * 40_000})
    assert_openai_error(response, 431, "request_header_fields_too_large")
    watch.still_serving()


def test_stalled_body_gets_408_while_other_clients_are_served(gateway: GatewayUnderTest, watch: Watch) -> None:
    body = as_bytes(GOOD_CHAT)
    stalled = [send_half_a_body(gateway, body) for _ in range(3)]
    started = time.monotonic()
    answers: list[tuple[int, str]] = []

    def read(sock: socket.socket) -> None:
        answers.append(read_response(sock, timeout=BODY_TIMEOUT + 5))

    readers = [threading.Thread(target=read, args=(sock,)) for sock in stalled]
    for reader in readers:
        reader.start()
    try:
        served = time.monotonic()
        watch.still_serving()
        assert time.monotonic() - served < BODY_TIMEOUT / 2, "a normal request waited behind stalled ones"
        for reader in readers:
            reader.join(timeout=BODY_TIMEOUT + 10)
        waited = time.monotonic() - started
    finally:
        for sock in stalled:
            sock.close()
    assert len(answers) == 3
    assert BODY_TIMEOUT * 0.8 <= waited <= BODY_TIMEOUT + 3
    for status, text in answers:
        assert status == 408
        assert_error_body(text, "request_timeout", None)
    watch.still_serving()


def test_client_that_hangs_up_mid_body_does_not_hurt_the_server(gateway: GatewayUnderTest, watch: Watch) -> None:
    sock = send_half_a_body(gateway, as_bytes(GOOD_CHAT))
    sock.close()
    watch.still_serving()


def test_unparseable_http_is_refused_and_the_server_keeps_serving(gateway: GatewayUnderTest, watch: Watch) -> None:
    """uvicorn refuses these before the app sees them: a 400, in plain text rather than OpenAI's JSON."""
    requests = [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    ]
    for raw in requests:
        with socket.create_connection(("127.0.0.1", gateway.process.port), timeout=5) as sock:
            sock.sendall(raw)
            status, text = read_response(sock, timeout=5)
        assert status == 400
        assert "Traceback" not in text
    watch.still_serving()


# name: (raw headers, how the message starts)
AUTH_FAILURES: dict[str, tuple[dict[bytes, bytes], str]] = {
    "no key": ({}, "You didn't provide an API key"),
    "bearer without a token": ({b"authorization": b"Bearer"}, "You didn't provide an API key"),
    "basic auth": ({b"authorization": b"Basic dXNlcjpwYXNz"}, "You didn't provide an API key"),
    "unknown key": ({b"authorization": b"Bearer gk-000000000000.nope"}, "Incorrect API key"),
    "not a gateway key": ({b"authorization": b"Bearer sk-proj-0123456789"}, "Incorrect API key"),
    "unknown key in api-key": ({b"api-key": b"gk-000000000000.nope"}, "Incorrect API key"),
    "non-ASCII bytes": ({b"authorization": b"Bearer gk-\xff\xfe.x"}, "Incorrect API key"),
}


@pytest.mark.parametrize("case", list(AUTH_FAILURES))
def test_request_without_a_valid_key_gets_401(case: str, gateway: GatewayUnderTest, watch: Watch) -> None:
    headers, message = AUTH_FAILURES[case]
    response = httpx.post(gateway.url + CHAT, json=GOOD_CHAT, headers=headers, timeout=10)
    assert assert_openai_error(response, 401, "invalid_api_key")["message"].startswith(message)
    watch.still_serving()


@pytest.mark.parametrize(("which", "message"), [("revoked_key", "revoked"), ("expired_key", "expired")])
def test_revoked_or_expired_key_gets_401_saying_so(
    which: str, message: str, gateway: GatewayUnderTest, watch: Watch
) -> None:
    key = getattr(gateway, which)
    for response in (
        httpx.post(gateway.url + CHAT, json=GOOD_CHAT, headers=auth(key), timeout=10),
        httpx.get(gateway.url + "/v1/models", headers=auth(key), timeout=10),
    ):
        assert message in assert_openai_error(response, 401, "invalid_api_key")["message"]
    watch.still_serving()


def test_right_key_id_with_a_wrong_secret_gets_401(gateway: GatewayUnderTest, watch: Watch) -> None:
    forged = gateway.key.split(".")[0] + ".not-the-secret"
    response = httpx.post(gateway.url + CHAT, json=GOOD_CHAT, headers=auth(forged), timeout=10)
    assert_openai_error(response, 401, "invalid_api_key")
    watch.still_serving()


def send_half_a_body(gateway: GatewayUnderTest, body: bytes) -> socket.socket:
    """Headers announcing the whole body, then only its first half: the client stalls."""
    sock = socket.create_connection(("127.0.0.1", gateway.process.port), timeout=10)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {gateway.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[: len(body) // 2])
    return sock


def read_response(sock: socket.socket, timeout: float) -> tuple[int, str]:
    sock.settimeout(timeout)
    response = HTTPResponse(sock)
    response.begin()
    return response.status, response.read().decode()
