"""gateway.yaml → frozen, validated Settings.

The file is read once (yamlconf), validated completely (unknown keys are errors naming file, line and key),
and turned into frozen dataclasses. A few environment variables override the file (see ENV_OVERRIDES).
Upstream secrets are references (`env:VAR`, or a literal, which is allowed but warned about) resolved
only when the gateway starts serving, so admin commands such as `gateway keys` need no upstream secrets.
"""

import logging
import os
import re
import socket
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway import yamlconf
from gateway.sections import (
    FORBID,
    AuditSettings,
    LimitsSettings,
    PiiSettings,
    PolicySettings,
    TelemetrySettings,
    http_url,
)

log = logging.getLogger("gateway.settings")

Provider = Literal["openai", "azure", "vllm", "ollama", "openai_compatible", "anthropic"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds: to connect, to wait for each read (first byte included), and for the whole exchange."""

    __pydantic_config__ = FORBID
    connect: float = 10.0
    read: float = 600.0
    total: float | None = None


USD = Annotated[Decimal, Field(ge=0, decimal_places=6)]


@dataclass(frozen=True)
class PriceSetting:
    """USD per 1M tokens (0 for a self-hosted model that costs nothing); overrides the shipped pricing table.
    `cached_input` defaults to `input`; `max_output_tokens` bounds what a request without a cap can cost."""

    __pydantic_config__ = FORBID
    input: USD
    output: USD
    cached_input: USD | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None


@dataclass(frozen=True)
class Deployment:
    """One upstream that can serve a model: where it is, how to reach it, its share of the load."""

    __pydantic_config__ = FORBID
    provider: Provider
    base_url: str
    api_key: str | None = None
    model: str | None = None
    name: str | None = None
    api_version: str | None = None
    organization: str | None = None
    project: str | None = None
    timeout: Timeouts = field(default_factory=Timeouts)
    weight: Annotated[int, Field(ge=0)] = 1
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    health_check: "HealthCheck | None" = None
    price: PriceSetting | None = None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str | None:
        return http_url(value)

    @property
    def upstream_model(self) -> str:
        assert self.model is not None, "ModelConfig fills in the upstream model name"
        return self.model

    @property
    def label(self) -> str:
        return self.name or f"{self.provider}:{self.base_url.split('://', 1)[1].split('/', 1)[0]}"


@dataclass(frozen=True)
class Retries:
    """Attempts per request (the first included), across deployments; exponential backoff with full jitter."""

    __pydantic_config__ = FORBID
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff: Annotated[float, Field(ge=0)] = 0.25
    max_backoff: Annotated[float, Field(ge=0)] = 8.0
    max_retry_after: Annotated[float, Field(ge=0)] = 30.0


@dataclass(frozen=True)
class HealthCheck:
    """An active probe of a self-hosted server: `path` from the server's root (e.g. /health or /v1/models)."""

    __pydantic_config__ = FORBID
    path: str = "/health"
    interval: Annotated[float, Field(gt=0)] = 10.0
    timeout: Annotated[float, Field(gt=0)] = 2.0


@dataclass(frozen=True)
class Breaker:
    """Per deployment: open after `failures` consecutive failures; after `cooldown` seconds one probe may pass."""

    __pydantic_config__ = FORBID
    failures: Annotated[int, Field(ge=1)] = 5
    cooldown: Annotated[float, Field(ge=0)] = 30.0


@dataclass(frozen=True)
class DefaultResponse:
    """What a chat completion answers when every deployment and fallback failed (graceful degradation)."""

    __pydantic_config__ = FORBID
    content: str


Strategy = Literal["priority", "weighted", "least_busy", "lowest_latency"]


@dataclass(frozen=True)
class ModelConfig:
    """A model name clients use, served by one deployment (the short form) or by a list of `deployments`."""

    __pydantic_config__ = FORBID
    name: str
    provider: Provider | None = None
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    api_version: str | None = None
    organization: str | None = None
    project: str | None = None
    timeout: Timeouts = field(default_factory=Timeouts)
    price: PriceSetting | None = None
    deployments: tuple[Deployment, ...] = ()
    strategy: Strategy = "priority"
    retries: Retries = field(default_factory=Retries)
    breaker: Breaker = field(default_factory=Breaker)
    fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: tuple[str, ...] = ()
    default_response: DefaultResponse | None = None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _one_form(self) -> "ModelConfig":
        short = self.provider is not None or self.base_url is not None
        if short and self.deployments:
            raise ValueError("give either provider/base_url (one deployment) or deployments, not both")
        if not short and not self.deployments:
            raise ValueError("give provider and base_url, or a list of deployments")
        if short and (self.provider is None or self.base_url is None):
            raise ValueError("provider and base_url go together")
        deployments = self.deployments or (self._short_form(),)
        filled = tuple(replace(d, model=d.model or self.name) for d in deployments)
        object.__setattr__(self, "deployments", filled)
        return self

    def _short_form(self) -> Deployment:
        assert self.provider is not None and self.base_url is not None
        fields = ("api_key", "model", "api_version", "organization", "project", "timeout", "price")
        return Deployment(self.provider, self.base_url, **{f: getattr(self, f) for f in fields})


@dataclass(frozen=True)
class Listen:
    __pydantic_config__ = FORBID
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class ServerLimits:
    """Limits on what a client may send: body size and read time, header count and size."""

    __pydantic_config__ = FORBID
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout: float = 30.0
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024


@dataclass(frozen=True)
class Settings:
    __pydantic_config__ = FORBID
    models: tuple[ModelConfig, ...]
    listen: Listen = field(default_factory=Listen)
    server: ServerLimits = field(default_factory=ServerLimits)
    keys_file: str | None = None
    policies: PolicySettings | None = None
    audit: AuditSettings | None = None
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    pii: PiiSettings = field(default_factory=PiiSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    log_level: str = "info"
    source: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> "Settings":
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {', '.join(duplicates)}")
        for model in self.models:
            for target in (*model.fallbacks, *model.context_window_fallbacks):
                if target not in names or target == model.name:
                    raise ValueError(f"model {model.name}: fallback {target!r} is not another configured model")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def keys_path(self) -> Path:
        if self.keys_file:
            return Path(self.keys_file)
        return Path(self.source).with_name("gateway.keys.json")

    def near(self, path: str) -> Path:
        """`path` relative to gateway.yaml (an absolute path stays as it is)."""
        return Path(self.source).parent / path

    @property
    def audit_url(self) -> str | None:
        if self.audit is None:
            return None
        return self.audit.clickhouse_url or f"chdb://{self.near('audit-db').resolve()}"

    @property
    def audit_chain(self) -> str:
        """The hash chain this installation writes: `audit.chain_id`, or the host name."""
        chain = self.audit.chain_id if self.audit is not None else None
        return chain or re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:64] or "gateway"

    def audit_public_keys(self) -> list[bytes]:
        """The public keys `gateway audit verify` trusts: this installation's own and `audit.trusted_keys`."""
        if self.audit is None:
            return []
        own = self.near(self.audit.signing_key).with_suffix(".pub")
        keys = [own.read_bytes()] if own.exists() else []
        for path in map(self.near, self.audit.trusted_keys):
            if path.exists():
                keys.append(path.read_bytes())
            else:
                log.warning("audit.trusted_keys: %s does not exist; checkpoints signed by it will fail", path)
        return keys

    @property
    def policy_dir(self) -> Path | None:
        if self.policies is None:
            return None
        return Path(self.source).parent / self.policies.dir


ENV_OVERRIDES = {
    "GATEWAY_HOST": ("listen", "host", str),
    "GATEWAY_PORT": ("listen", "port", int),
    "GATEWAY_KEYS_FILE": (None, "keys_file", str),
    "GATEWAY_LOG_LEVEL": (None, "log_level", str),
    "GATEWAY_POLICY_DIR": ("policies", "dir", str),
    "GATEWAY_CLICKHOUSE_URL": ("audit", "clickhouse_url", str),
    "GATEWAY_REDIS_URL": ("limits", "redis_url", str),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("telemetry", "otlp_endpoint", str),
    "OTEL_SERVICE_NAME": ("telemetry", "service_name", str),
}


def load(path: str | Path) -> Settings:
    """Read, validate and freeze gateway.yaml; raise yamlconf.ConfigError listing every problem."""
    path = Path(path)
    data = yamlconf.read(path)
    if not isinstance(data, yamlconf.LineDict):
        raise yamlconf.ConfigError([yamlconf.Problem(str(path), 1, "", "expected a mapping at the top level")])
    data["source"] = str(path.resolve())
    if "audit" not in data:
        data["audit"] = {}  # on by default: every request recorded, in the embedded engine unless a URL is set
    elif data["audit"] is False:
        data["audit"] = None  # `audit: false`: no audit trail
    settings = yamlconf.validate(Settings, data, path)
    _warn_literal_secrets(settings, data, path)
    return _apply_env(settings)


def _apply_env(settings: Settings) -> Settings:
    for var, (section, name, kind) in ENV_OVERRIDES.items():
        if var not in os.environ:
            continue
        value = kind(os.environ[var])
        if section is None:
            settings = replace(settings, **{name: value})
        elif section == "policies" and settings.policies is None:
            settings = replace(settings, policies=PolicySettings(dir=str(value)))
        elif section == "audit" and settings.audit is None:
            settings = replace(settings, audit=AuditSettings(clickhouse_url=str(value)))
        else:
            settings = replace(settings, **{section: replace(getattr(settings, section), **{name: value})})
    return settings


def _warn_literal_secrets(settings: Settings, data: yamlconf.LineDict, path: Path) -> None:
    for index, model in enumerate(settings.models):
        for number, deployment in enumerate(model.deployments):
            key = deployment.api_key
            if key and not key.startswith(("env:", "enc:")):
                node = data["models"][index]
                field_name = "api_key" if "api_key" in node.lines else f"deployments[{number}].api_key"
                if field_name != "api_key":
                    node = node["deployments"][number]
                line = node.lines.get("api_key", node.line)
                log.warning("%s:%d: models[%d].%s is a literal secret; prefer env:VAR", path, line, index, field_name)


class SecretError(Exception):
    pass


def resolve_secret(reference: str | None, where: str) -> str | None:
    """`env:VAR` → the variable's value; a literal → itself; None → None."""
    if reference is None or not reference.startswith("env:"):
        return reference
    var = reference[4:]
    value = os.environ.get(var)
    if not value:
        raise SecretError(f"{where}: environment variable {var} is not set")
    return value
