"""Fixtures: a real mock upstream and a real gateway on loopback, keys made with the real CLI, SDK clients."""

import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.redis_server import RedisServer, start_redis
from tests.servers import MOCK_MODELS, UPSTREAM_SECRET, Mock, Process, free_port, gateway_command, start

GATEWAY_YAML = (
    "audit: false  # this module does not test the audit trail (on by default)\n"
    + MOCK_MODELS
    + """\
  - name: alias-model
    provider: vllm
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    model: mock-model
  - name: faulty-model
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    breaker: {{failures: 1000}}
    retries: {{attempts: 2, backoff: 0.01}}
  - name: slow-model
    provider: openai_compatible
    base_url: {mock}/v1
    api_key: env:TEST_UPSTREAM_KEY
    timeout: {{connect: 2, read: 0.5}}
    breaker: {{failures: 1000}}
  - name: unreachable-model
    provider: ollama
    base_url: http://127.0.0.1:{closed_port}/v1
    breaker: {{failures: 1000}}
server:
  max_body_bytes: 65536
  body_timeout: 1.5
"""
)


@dataclass
class GatewayUnderTest:
    process: Process
    config: Path
    key: str
    limited_key: str
    revoked_key: str
    expired_key: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def base_url(self) -> str:
        return self.process.url + "/v1"


def create_key(config: Path, *args: str) -> str:
    result = gateway_command("keys", "create", "--config", str(config), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    log = tmp_path_factory.mktemp("mock") / "mock.log"
    process = start(["-m", "load_tests.mock_upstream", "--api-key", UPSTREAM_SECRET], "/health", log)
    mock = Mock(process)
    try:
        yield mock
    finally:
        mock.client.close()
        process.stop()


# What the `chatty` mock answers to anything: personal data the model "made up" (not in any prompt).
MADE_UP_EMAIL = "bob.smith@example.org"
MADE_UP_PHONE = "+1 212-555-0199"
MADE_UP_NAME = "John Smith"
MADE_UP_IP = "198.51.100.7"
MADE_UP_REPLY = (
    f"Our records say {MADE_UP_NAME} can be reached at {MADE_UP_EMAIL} or on {MADE_UP_PHONE}; "
    f"his laptop last connected from {MADE_UP_IP}. Anything else I can help with?"
)


@pytest.fixture(scope="session")
def chatty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    """A mock upstream whose every answer is MADE_UP_REPLY, whatever it is asked."""
    log = tmp_path_factory.mktemp("chatty") / "mock.log"
    args = ["-m", "load_tests.mock_upstream", "--api-key", UPSTREAM_SECRET, "--reply", MADE_UP_REPLY]
    mock = Mock(start(args, "/health", log))
    try:
        yield mock
    finally:
        mock.client.close()
        mock.process.stop()


@pytest.fixture
def upstream(mock: Mock) -> Mock:
    """The mock upstream with no faults and no recorded requests."""
    mock.reset()
    return mock


@pytest.fixture(scope="session")
def gateway(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayUnderTest]:
    folder = tmp_path_factory.mktemp("gateway")
    config = folder / "gateway.yaml"
    config.write_text(GATEWAY_YAML.format(mock=mock.url, closed_port=free_port()))
    key = create_key(config, "--team", "platform", "--name", "everything")
    limited = create_key(config, "--team", "finance", "--models", "mock-model,alias-model")
    revoked = create_key(config, "--team", "finance")
    expired = create_key(config, "--team", "finance", "--expires", "2020-01-01")
    revoked_id = revoked.removeprefix("gk-").split(".")[0]
    assert gateway_command("keys", "revoke", "--config", str(config), revoked_id).returncode == 0
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_SECRET}
    process = start(["-m", "gateway", "serve", "--config", str(config)], "/healthz", folder / "gateway.log", env)
    try:
        yield GatewayUnderTest(process, config, key, limited, revoked, expired)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for the whole session."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied (FLUSHALL), as a `redis://` URL."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def client(gateway: GatewayUnderTest, upstream: Mock) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=20) as sdk:
        yield sdk


@pytest.fixture
async def async_client(gateway: GatewayUnderTest, upstream: Mock) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=20) as sdk:
        yield sdk


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()
