"""An immutable, compiled set of policies, and the effective policy for one request.

The merge is a conjunction, so it does not depend on the order of files or of policies: a request must pass
every rule of every policy that matches it. Hence the stricter limit wins (the smallest token cap is the one
that fires first), an explicit deny anywhere beats an allow anywhere, and allow lists intersect. Layers
(global → team → key) order the effective policy's rules and the `explain` output; they never loosen a rule.
Within one request the strictest action decides: block > redact > warn > shadow.

`PolicySet.resolve(...)` returns exactly one `Effective` per (team, key, tags, model, route), cached for the
life of the revision (a reload builds a new PolicySet, so the cache never holds a stale policy).
"""

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.guardrails.base import Action, TextCheck, TextRule
from gateway.guardrails.credentials import Secrets
from gateway.guardrails.injection import Injection
from gateway.guardrails.text import Patterns, Terms
from gateway.guardrails.topics import Topics
from gateway.policy.schema import (
    BudgetRule,
    InjectionRule,
    MaxInputTokensRule,
    MaxTokensRule,
    MetadataRule,
    ModelsRule,
    PiiRule,
    Policy,
    RateLimitRule,
    RegexRule,
    SecretsRule,
    TermsRule,
    TextRuleBase,
    TopicsRule,
)

LEVELS = {"global": 0, "team": 1, "key": 2}
CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class RuleRef:
    """One rule as it applies: its policy, its effective action (shadow in a shadow-mode policy), its message."""

    policy: str
    rule: str
    kind: str
    action: Action
    message: str


@dataclass(frozen=True)
class Loaded:
    """A validated policy with where it came from and its compiled text checks (rule name → check)."""

    policy: Policy
    file: str
    line: int
    checks: dict[str, TextCheck] = field(hash=False, compare=False)

    @property
    def sort_key(self) -> tuple[int, str]:
        return LEVELS[self.policy.level], self.policy.name

    def matches(self, team: str, key_id: str, tags: Sequence[str], model: str, route: str) -> bool:
        m = self.policy.match
        return (
            (not m.teams or team in m.teams)
            and (not m.keys or key_id in m.keys)
            and (not m.key_tags or any(tag in m.key_tags for tag in tags))
            and (not m.models or any(fnmatch.fnmatchcase(model, glob) for glob in m.models))
            and (not m.routes or route in m.routes)
        )


@dataclass(frozen=True)
class Effective:
    """Everything that applies to one request, in layer order (global, team, key; then by policy name)."""

    revision: str
    policies: tuple[str, ...] = ()
    models: tuple[tuple[RuleRef, ModelsRule], ...] = ()
    metadata: tuple[tuple[RuleRef, MetadataRule], ...] = ()
    max_tokens: tuple[tuple[RuleRef, MaxTokensRule], ...] = ()
    input_tokens: tuple[tuple[RuleRef, MaxInputTokensRule], ...] = ()
    input_text: tuple[TextRule, ...] = ()
    output_text: tuple[TextRule, ...] = ()
    rate_limits: tuple[tuple[RuleRef, RateLimitRule], ...] = ()
    budgets: tuple[tuple[RuleRef, BudgetRule], ...] = ()
    pii: tuple[tuple[RuleRef, PiiRule], ...] = ()

    @property
    def limits(self) -> bool:
        return bool(self.rate_limits or self.budgets)

    @property
    def checks_input(self) -> bool:
        return bool(self.models or self.metadata or self.max_tokens or self.input_tokens or self.input_text)


class PolicySet:
    """The policies of one revision of the policy directory; never changed once built."""

    def __init__(self, revision: str, loaded: Sequence[Loaded], files: Sequence[str]) -> None:
        self.revision = revision
        self.loaded = tuple(sorted(loaded, key=lambda item: item.sort_key))
        self.files = tuple(files)
        self._cache: dict[tuple[Any, ...], Effective] = {}

    def matching(self, team: str, key_id: str, tags: Sequence[str], model: str, route: str) -> list[Loaded]:
        return [item for item in self.loaded if item.matches(team, key_id, tags, model, route)]

    def resolve(self, team: str, key_id: str, tags: tuple[str, ...], model: str, route: str) -> Effective:
        cache_key = (team, key_id, tags, model, route)
        effective = self._cache.get(cache_key)
        if effective is None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            effective = self._cache[cache_key] = merge(self.revision, self.matching(*cache_key))
        return effective


def merge(revision: str, matching: Sequence[Loaded]) -> Effective:
    """The effective policy of the matching policies (already in layer order)."""
    names = ("models", "metadata", "max_tokens", "input_tokens", "rate_limits", "budgets", "pii")
    parts: dict[str, list[Any]] = {name: [] for name in names}
    input_text: list[TextRule] = []
    output_text: list[TextRule] = []
    for item in matching:
        policy = item.policy
        for rule in policy.rules:
            action: Action = "shadow" if policy.mode == "shadow" else rule.action
            message = rule.message or f"This request was blocked by policy '{policy.name}' (rule '{rule.name}')."
            ref = RuleRef(policy.name, rule.name, rule.kind, action, message)
            if isinstance(rule, ModelsRule):
                parts["models"].append((ref, rule))
            elif isinstance(rule, MetadataRule):
                parts["metadata"].append((ref, rule))
            elif isinstance(rule, MaxTokensRule):
                parts["max_tokens"].append((ref, rule))
            elif isinstance(rule, MaxInputTokensRule):
                parts["input_tokens"].append((ref, rule))
            elif isinstance(rule, RateLimitRule):
                parts["rate_limits"].append((ref, rule))
            elif isinstance(rule, BudgetRule):
                parts["budgets"].append((ref, rule))
            elif isinstance(rule, PiiRule):
                parts["pii"].append((ref, rule))
            else:
                replacement = rule.replacement if isinstance(rule, TextRuleBase) else "[REDACTED]"
                check = item.checks[rule.name]
                text_rule = TextRule(policy.name, rule.name, action, message, check, replacement, rule.kind)
                where = rule.where if isinstance(rule, TextRuleBase) else ("input",)
                if "input" in where:
                    input_text.append(text_rule)
                if "output" in where:
                    output_text.append(text_rule)
    return Effective(
        revision=revision,
        policies=tuple(item.policy.name for item in matching),
        models=tuple(parts["models"]),
        metadata=tuple(parts["metadata"]),
        max_tokens=tuple(parts["max_tokens"]),
        input_tokens=tuple(parts["input_tokens"]),
        input_text=tuple(input_text),
        output_text=tuple(output_text),
        rate_limits=tuple(parts["rate_limits"]),
        budgets=tuple(parts["budgets"]),
        pii=tuple(parts["pii"]),
    )


def compile_check(rule: Any) -> TextCheck | None:
    """The text check of a text rule, built once when the policy loads (raises ValueError on bad parameters)."""
    if isinstance(rule, TermsRule):
        return Terms(rule.terms, word_boundary=rule.word_boundary)
    if isinstance(rule, RegexRule):
        return Patterns(rule.patterns, ignore_case=rule.ignore_case, window=rule.window)
    if isinstance(rule, SecretsRule):
        return Secrets(rule.kinds)
    if isinstance(rule, InjectionRule):
        return Injection(rule.threshold, rule.extra_patterns)
    if isinstance(rule, TopicsRule):
        return Topics(rule.topics, min_hits=rule.min_hits)
    return None


def model_allowed(rule: ModelsRule, model: str) -> bool:
    if any(fnmatch.fnmatchcase(model, glob) for glob in rule.deny):
        return False
    return rule.allow is None or any(fnmatch.fnmatchcase(model, glob) for glob in rule.allow)
