"""The names telemetry uses: OpenTelemetry semantic-convention attributes (HTTP, GenAI) and the gateway's own.

GenAI names follow the OpenTelemetry GenAI semantic conventions (semconv 1.37+, "Development" status):
`gen_ai.provider.name` (and its predecessor `gen_ai.system`, still read by many backends, with the same value),
`gen_ai.operation.name`, `gen_ai.request.*`, `gen_ai.response.*`, `gen_ai.usage.*`. Gateway-specific names
start with `gateway.`.
"""

from collections.abc import Mapping
from typing import Any

from gateway.settings import Deployment

# HTTP and general semantic conventions (stable)
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
PROTOCOL_VERSION = "network.protocol.version"
USER_AGENT = "user_agent.original"
ERROR_TYPE = "error.type"

# GenAI semantic conventions
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"

# the gateway's own
REQUEST_ID = "gateway.request_id"
ROUTE = "gateway.route"
TEAM = "gateway.team"
KEY_ID = "gateway.key_id"
DEPLOYMENT = "gateway.deployment"
ATTEMPT = "gateway.attempt"
POLICY_REVISION = "gateway.policy.revision"
DECISIONS = "gateway.policy.decisions"
POLICY = "gateway.policy"
RULE = "gateway.rule"
RULE_KIND = "gateway.rule.kind"
WHERE = "gateway.rule.where"
ACTION = "gateway.action"
PII_ENTITY = "gateway.pii.entity"
COST = "gateway.cost.micro_usd"
CLIENT_DISCONNECTED = "gateway.client_disconnected"

OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
}
# gateway.yaml's provider → gen_ai.provider.name (a well-known value where the conventions have one)
PROVIDERS = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}
# request body field → attribute, for the sampling parameters a span records
REQUEST_PARAMETERS = (
    ("max_completion_tokens", REQUEST_MAX_TOKENS),
    ("max_tokens", REQUEST_MAX_TOKENS),
    ("max_output_tokens", REQUEST_MAX_TOKENS),
    ("temperature", REQUEST_TEMPERATURE),
    ("top_p", REQUEST_TOP_P),
)


def operation(endpoint: str) -> str:
    return OPERATIONS.get(endpoint, endpoint)


def provider(deployment: Deployment) -> str:
    return PROVIDERS.get(deployment.provider, deployment.provider)


def request_parameters(body: Mapping[str, Any]) -> dict[str, Any]:
    """The GenAI request attributes a client's body sets (numbers only; the first cap field found wins)."""
    found: dict[str, Any] = {}
    for name, attribute in REQUEST_PARAMETERS:
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and attribute not in found:
            found[attribute] = value
    return found
