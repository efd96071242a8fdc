"""Applying an effective policy to a request and to its answer: pure functions, no I/O.

The pipeline stages (gateway.policy.stages) and `gateway policy test` call the same functions, so a test
case in a policy repository decides exactly as the gateway does. Every rule that fires leaves a `Decision`
(policy, revision, rule, action, where, what matched — never the matched text — and how long the check
took); the strictest action decides (block > redact > warn > shadow). A request is checked in full before
it is refused, so shadow and warn decisions are recorded on blocked requests too.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import PolicyViolation
from gateway.guardrails import tokens
from gateway.guardrails.base import SEVERITY, Action, Finding, TextRule, Where, apply
from gateway.guardrails.texts import request_slots
from gateway.policy.compiled import Effective, RuleRef, model_allowed

# The request fields that cap an answer's length, per endpoint; the first is the one a cap sets.
MAX_TOKEN_FIELDS = {
    "chat/completions": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
# Providers that take `max_tokens` rather than `max_completion_tokens` on chat (OpenAI's o-series refuse it).
MAX_TOKENS_PROVIDERS = frozenset({"vllm", "ollama", "openai_compatible"})


@dataclass(frozen=True, slots=True)
class Decision:
    """One rule that fired, as the audit event records it."""

    policy: str
    revision: str
    rule: str
    kind: str
    action: Action
    where: Where
    detail: str
    elapsed_us: int

    @property
    def name(self) -> str:
        return f"{self.policy}/{self.rule}"


class Recorder:
    """Collects the decisions of one request; `blocking` is the first decision that blocks."""

    def __init__(self, revision: str, decisions: list[Decision]) -> None:
        self.revision = revision
        self.decisions = decisions
        self.blocking: Decision | None = None
        self.messages: dict[str, str] = {}

    def add(self, ref: RuleRef, where: Where, detail: str, started: float) -> None:
        elapsed = int((time.perf_counter() - started) * 1e6)
        decision = Decision(ref.policy, self.revision, ref.rule, ref.kind, ref.action, where, detail, elapsed)
        self.decisions.append(decision)
        if ref.action == "block" and self.blocking is None:
            self.blocking = decision
            self.messages[decision.name] = ref.message

    def finding(self, where: Where) -> Callable[[Finding], None]:
        """A callback recording a text rule's finding (used by the output scanners)."""

        def record(finding: Finding) -> None:
            self.add(text_ref(finding.rule), where, finding.hit.label, time.perf_counter())

        return record

    def raise_if_blocked(self) -> None:
        if self.blocking is not None:
            raise violation(self.blocking, self.messages[self.blocking.name])


def text_ref(rule: TextRule) -> RuleRef:
    return RuleRef(rule.policy, rule.rule, rule.kind, rule.action, rule.message)


def violation(decision: Decision, message: str) -> PolicyViolation:
    return PolicyViolation(message, policy=decision.policy, rule=decision.rule)


def check_input(
    effective: Effective,
    endpoint: str,
    body: dict[str, Any],
    headers: Mapping[str, str],
    provider: str,
    decisions: list[Decision],
    tokenizer_model: str | None = None,
) -> bool:
    """Check a request; rewrite `body` where a rule redacts. True if the body changed; PolicyViolation if blocked.

    Tokens are counted as `tokenizer_model` counts them (the upstream's model name), else as `model` would."""
    recorder = Recorder(effective.revision, decisions)
    model = str(body.get("model", ""))
    for ref, models_rule in effective.models:
        started = time.perf_counter()
        if not model_allowed(models_rule, model):
            recorder.add(ref, "input", f"model {model!r} is not allowed", started)
    for ref, metadata in effective.metadata:
        started = time.perf_counter()
        missing = [f"body.{f}" for f in metadata.body_fields if not body.get(f)]
        missing += [f"header {h}" for h in metadata.headers if not headers.get(h, "").strip()]
        if missing:
            recorder.add(ref, "input", "missing " + ", ".join(missing), started)
    changed = _cap_max_tokens(effective, endpoint, body, provider, recorder)
    if effective.input_text or effective.input_tokens:
        slots = request_slots(endpoint, body)
        if effective.input_text:
            changed |= _check_texts(effective.input_text, slots, [slot.get() for slot in slots], recorder)
        if effective.input_tokens:
            messages = len(body["messages"]) if endpoint == "chat/completions" else 0
            _check_tokens(effective, [slot.get() for slot in slots], messages, tokenizer_model or model, recorder)
    recorder.raise_if_blocked()
    return changed


def _check_tokens(effective: Effective, texts: list[str], messages: int, model: str, recorder: Recorder) -> None:
    """Token limits: the UTF-8 size bounds the count, so a prompt within every limit by it is never tokenized;
    otherwise it is counted once, for all the limits."""
    bound = tokens.upper_bound(texts, messages)
    count: int | None = None
    for ref, limit in effective.input_tokens:
        started = time.perf_counter()
        if bound <= limit.limit:
            continue
        count = tokens.count(texts, model, messages=messages) if count is None else count
        if count > limit.limit:
            recorder.add(ref, "input", f"{count} input tokens > {limit.limit}", started)


def _cap_max_tokens(
    effective: Effective, endpoint: str, body: dict[str, Any], provider: str, recorder: Recorder
) -> bool:
    fields = MAX_TOKEN_FIELDS.get(endpoint)
    if not fields or not effective.max_tokens:
        return False
    changed = False
    for ref, cap in effective.max_tokens:
        started = time.perf_counter()
        asked = {f: body[f] for f in fields if isinstance(body.get(f), int) and not isinstance(body.get(f), bool)}
        over = {f: v for f, v in asked.items() if v > cap.limit}
        if ref.action == "redact" and (over or not asked):
            for name in over or [_cap_field(endpoint, provider)]:
                body[name] = cap.limit
            changed = True
            detail = f"capped at {cap.limit}" if over else f"set to {cap.limit}"
            recorder.add(ref, "input", detail, started)
        elif over:
            recorder.add(ref, "input", f"{', '.join(over)} {max(over.values())} > {cap.limit}", started)
    return changed


def _cap_field(endpoint: str, provider: str) -> str:
    if endpoint == "chat/completions" and provider in MAX_TOKENS_PROVIDERS:
        return "max_tokens"
    return MAX_TOKEN_FIELDS[endpoint][0]


def _check_texts(rules: Sequence[TextRule], slots: Sequence[Any], texts: list[str], recorder: Recorder) -> bool:
    """Scan the request's texts (joined, one scan per rule); redact slot by slot only when a redact rule hit."""
    joined = "\n\n".join(texts)
    redacting: list[TextRule] = []
    for rule in rules:
        started = time.perf_counter()
        hits = rule.check.scan(joined)
        if not hits:
            continue
        labels = sorted({hit.label for hit in hits})
        recorder.add(text_ref(rule), "input", ", ".join(labels), started)
        if rule.action == "redact":
            redacting.append(rule)
    if not redacting or recorder.blocking is not None:
        return False
    changed = False
    for slot, text in zip(slots, texts, strict=True):
        new, _ = apply(redacting, text)
        if new != text:
            slot.set(new)
            changed = True
    return changed


def warnings(decisions: Sequence[Decision]) -> str:
    """The x-gateway-policy-warnings header value: the rules that warned, once each."""
    names = dict.fromkeys(d.name for d in decisions if d.action == "warn")
    return ", ".join(names)


def strictest_action(decisions: Sequence[Decision]) -> Action | None:
    if not decisions:
        return None
    return max((d.action for d in decisions), key=SEVERITY.__getitem__)
