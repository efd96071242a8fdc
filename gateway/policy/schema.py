"""The policy file format: what a file in policies/ may say, validated completely when it loads.

    policies:
      - name: baseline                 # unique across all files
        description: ...
        mode: enforce | shadow         # shadow: every rule's action is only recorded
        match: {teams: [], keys: [], key_tags: [], models: [], routes: []}   # empty = any; globs for models
        rules:
          - {name: no-secrets, kind: secrets, action: block, where: [input, output], message: "..."}

Rule kinds: models, max_input_tokens, max_tokens, terms, regex, secrets, injection, topics, metadata,
rate_limit, budget, pii (each below). Actions: block, redact, warn, shadow. Parameters are checked here, with
file, line and field in every error: an invalid or catastrophic regular expression, an unknown secret kind,
a redact action on a rule that cannot redact. `policies/policy.schema.json` is generated from these
classes (gateway policy schema).
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from gateway.guardrails.credentials import KINDS as SECRET_KINDS
from gateway.guardrails.text import check_pattern

FORBID = ConfigDict(extra="forbid")
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")]
Text = Annotated[str, StringConstraints(min_length=1)]
Route = Literal["chat/completions", "completions", "embeddings", "responses"]
Action = Literal["block", "redact", "warn", "shadow"]
Where = Literal["input", "output"]
Scope = Literal["key", "team", "model", "user"]
OnBackendDown = Literal["fail_open", "fail_closed"]
BOTH: tuple[Where, ...] = ("input", "output")


def _pattern(value: str) -> str:
    problem = check_pattern(value)
    if problem:
        raise ValueError(problem)
    return value


def _secret_kind(value: str) -> str:
    if value not in SECRET_KINDS:
        raise ValueError(f"unknown secret kind {value!r}; known: {', '.join(sorted(SECRET_KINDS))}")
    return value


Pattern = Annotated[str, AfterValidator(_pattern)]
SecretKind = Annotated[str, AfterValidator(_secret_kind)]


@dataclass(frozen=True)
class Match:
    """Which requests a policy applies to. Fields combine with AND, list items with OR; an empty list is any.

    A policy with `keys` or `key_tags` is a key policy, else with `teams` a team policy, else a global one.
    """

    __pydantic_config__ = FORBID
    teams: tuple[Text, ...] = ()
    keys: tuple[Text, ...] = ()
    key_tags: tuple[Text, ...] = ()
    models: tuple[Text, ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RuleBase:
    __pydantic_config__ = FORBID
    name: Name
    action: Action = "block"
    message: str | None = None

    @model_validator(mode="after")
    def _no_redact(self) -> "RuleBase":
        if self.action == "redact" and not self.can_redact():
            raise ValueError(f"a {vars(self).get('kind')} rule cannot redact; use block, warn or shadow")
        return self

    def can_redact(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class TextRuleBase(RuleBase):
    """A rule over the text a model receives (`input`) and the text it answers (`output`, streams included)."""

    where: tuple[Where, ...] = BOTH
    replacement: str = "[REDACTED]"

    def can_redact(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class ModelsRule(RuleBase):
    """Models (names clients use; globs) that may or may not be used. A deny beats an allow."""

    kind: Literal["models"]
    allow: tuple[Text, ...] | None = None
    deny: tuple[Text, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MaxInputTokensRule(RuleBase):
    """The prompt's size in tokens: tiktoken for OpenAI models, a conservative estimate otherwise."""

    kind: Literal["max_input_tokens"]
    limit: Annotated[int, Field(ge=1)]


@dataclass(frozen=True, kw_only=True)
class MaxTokensRule(RuleBase):
    """A cap on the answer's length (max_tokens, max_completion_tokens, max_output_tokens).

    block refuses a request asking for more; redact lowers the request's value to the cap, and sets it when
    the request has none."""

    kind: Literal["max_tokens"]
    limit: Annotated[int, Field(ge=1)]

    def can_redact(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class TermsRule(TextRuleBase):
    """Denied terms: case-insensitive with Unicode case folding, on word boundaries (none needed in CJK)."""

    kind: Literal["terms"]
    terms: Annotated[tuple[Text, ...], Field(min_length=1)]
    word_boundary: bool = True


@dataclass(frozen=True, kw_only=True)
class RegexRule(TextRuleBase):
    """Regular expressions (the `regex` module's syntax); patterns that can backtrack exponentially are refused,
    and every scan runs under a time bound. `window`: the longest match for unbounded patterns in streams."""

    kind: Literal["regex"]
    patterns: Annotated[tuple[Pattern, ...], Field(min_length=1)]
    ignore_case: bool = True
    window: Annotated[int, Field(ge=1, le=65536)] = 256


@dataclass(frozen=True, kw_only=True)
class SecretsRule(TextRuleBase):
    """Credentials in prompts or answers: API keys, tokens, private keys (all kinds unless listed)."""

    kind: Literal["secrets"]
    kinds: tuple[SecretKind, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class InjectionRule(RuleBase):
    """Prompt-injection and jailbreak heuristics on the input; fires when the matched weights reach `threshold`."""

    kind: Literal["injection"]
    threshold: Annotated[float, Field(gt=0)] = 1.0
    extra_patterns: tuple[Pattern, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TopicsRule(TextRuleBase):
    """Restricted topics, each a keyword set; a topic is hit at `min_hits` keyword occurrences."""

    kind: Literal["topics"]
    topics: dict[Text, Annotated[tuple[Text, ...], Field(min_length=1)]]
    min_hits: Annotated[int, Field(ge=1)] = 1


@dataclass(frozen=True, kw_only=True)
class MetadataRule(RuleBase):
    """Metadata a request must carry: body fields (e.g. `user`) and headers (e.g. `x-purpose`), non-empty."""

    kind: Literal["metadata"]
    body_fields: tuple[Text, ...] = ()
    headers: tuple[Text, ...] = ()

    @model_validator(mode="after")
    def _something_required(self) -> "MetadataRule":
        if not self.body_fields and not self.headers:
            raise ValueError("a metadata rule needs body_fields or headers")
        return self


def _unique_scope(per: tuple[Scope, ...]) -> None:
    if len(set(per)) != len(per):
        raise ValueError("`per` lists a scope twice")


@dataclass(frozen=True, kw_only=True)
class RateLimitRule(RuleBase):
    """Requests per minute, tokens per minute (prompt plus answer) and requests in flight, each counted per
    `per` (any of key, team, model, user: one counter per distinct value, several combine; [] is one
    counter for every request the policy matches). Windows slide: at most `rpm` requests in ANY 60 seconds.
    TPM admits on an estimate (the prompt counted, plus the request's answer cap or `default_max_tokens`)
    and is corrected with the real usage when the answer is complete. `on_backend_down`: with Redis
    unreachable, fail_open counts in the process instead, fail_closed refuses (503)."""

    kind: Literal["rate_limit"]
    per: tuple[Scope, ...] = ("key",)
    rpm: Annotated[int, Field(ge=1)] | None = None
    tpm: Annotated[int, Field(ge=1)] | None = None
    concurrent: Annotated[int, Field(ge=1)] | None = None
    default_max_tokens: Annotated[int, Field(ge=0)] = 1024
    on_backend_down: OnBackendDown = "fail_open"

    @model_validator(mode="after")
    def _some_limit(self) -> "RateLimitRule":
        if self.rpm is None and self.tpm is None and self.concurrent is None:
            raise ValueError("a rate_limit rule needs rpm, tpm or concurrent")
        if self.action == "warn":
            raise ValueError("a rate_limit rule blocks or is shadowed; use block or shadow")
        _unique_scope(self.per)
        return self


@dataclass(frozen=True, kw_only=True)
class BudgetRule(RuleBase):
    """A spend budget in USD per calendar `period` (day, ISO week or month, in the gateway's `limits.timezone`),
    counted per `per`. Each request reserves its maximum cost before it is sent and settles its real cost
    after; a request whose reservation does not fit is refused (429 budget_exceeded). `alert_percent`: soft
    thresholds, each reported once per period (audit event, optional webhook)."""

    kind: Literal["budget"]
    per: tuple[Scope, ...] = ("team",)
    usd: Annotated[Decimal, Field(gt=0, decimal_places=6)]
    period: Literal["day", "week", "month"] = "month"
    alert_percent: tuple[Annotated[int, Field(ge=1, le=100)], ...] = (80,)
    on_backend_down: OnBackendDown = "fail_closed"

    @model_validator(mode="after")
    def _check(self) -> "BudgetRule":
        if self.action == "warn":
            raise ValueError("a budget rule blocks or is shadowed; use block or shadow")
        _unique_scope(self.per)
        return self


PII_ENTITIES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON", "LOCATION", "NRP",
    "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "US_ITIN", "UK_NHS", "CRYPTO", "DATE_TIME",
    "MEDICAL_LICENSE", "URL", "MAC_ADDRESS", "CN_MOBILE", "CN_ID_CARD", "BANK_CARD", "API_KEY",
)  # fmt: skip
PiiAction = Literal["mask", "pseudonymise", "hash", "block"]


def _pii_entity(value: str) -> str:
    if value not in PII_ENTITIES:
        raise ValueError(f"unknown PII entity {value!r}; known: {', '.join(PII_ENTITIES)}")
    return value


@dataclass(frozen=True, kw_only=True)
class PiiRule(RuleBase):
    """Personal data in what a model receives, found by Presidio: each entity is masked (`<EMAIL_ADDRESS>`),
    pseudonymised (`<EMAIL_ADDRESS_1>` upstream, restored in the answer the client sees), hashed, or blocks
    the request. `output`: `restore` (the default) only puts pseudonyms back in the answer; `mask` also
    finds these entities in the text the model produced itself and masks them (hash entities are hashed)
    before the client sees it, in JSON answers and streams. `on_error`: when the analyzer fails or times
    out, fail_closed refuses (503), fail_open passes the text unchanged and records it. `action: shadow`
    (or a shadow policy) only records, and does not scan answers."""

    kind: Literal["pii"]
    action: Action = "redact"
    entities: dict[Annotated[str, AfterValidator(_pii_entity)], PiiAction]
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.35  # Presidio's phone numbers score 0.4
    output: Literal["restore", "mask"] = "restore"
    on_error: OnBackendDown = "fail_closed"

    def can_redact(self) -> bool:
        return True

    @model_validator(mode="after")
    def _check(self) -> "PiiRule":
        if not self.entities:
            raise ValueError("a pii rule needs at least one entity")
        if self.action not in ("redact", "shadow"):
            raise ValueError("a pii rule's action is redact (each entity's own action applies) or shadow")
        return self


Rule = Annotated[
    ModelsRule
    | MaxInputTokensRule
    | MaxTokensRule
    | TermsRule
    | RegexRule
    | SecretsRule
    | InjectionRule
    | TopicsRule
    | MetadataRule
    | RateLimitRule
    | BudgetRule
    | PiiRule,
    Field(discriminator="kind"),
]
TEXT_KINDS = (TermsRule, RegexRule, SecretsRule, InjectionRule, TopicsRule)


@dataclass(frozen=True)
class Policy:
    __pydantic_config__ = FORBID
    name: Name
    rules: tuple[Rule, ...]
    description: str = ""
    mode: Literal["enforce", "shadow"] = "enforce"
    match: Match = field(default_factory=Match)

    @model_validator(mode="after")
    def _unique_rules(self) -> "Policy":
        names = [rule.name for rule in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule names: {', '.join(duplicates)}")
        return self

    @property
    def level(self) -> Literal["global", "team", "key"]:
        if self.match.keys or self.match.key_tags:
            return "key"
        return "team" if self.match.teams else "global"


@dataclass(frozen=True)
class PolicyFile:
    __pydantic_config__ = FORBID
    policies: tuple[Policy, ...]
