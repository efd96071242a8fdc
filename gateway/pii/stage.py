"""The pipeline stages of PII protection.

    Redact      after the input checks: every text the model would receive (texts.request_slots: messages and
                content parts, tool-call arguments and tool results, prompts, embedding inputs, Responses
                inputs) goes through the pre-filter, and the candidates through Presidio in the process pool;
                each entity found is masked, pseudonymised or hashed, or blocks the request (400)
    MaskAnswer  right after the upstream answered, for rules with `output: mask`: values the model produced
                are masked (gateway.pii.output), in JSON answers and streams
    RestorePii  then (after KeepAnswer, which stores the answer with placeholders): pseudonyms in the answer
                are put back to the real values, in JSON answers at once and in streams chunk by chunk (a
                placeholder split across chunks is held back, never more than a placeholder's length)

Rules merge as a conjunction: an entity named by several rules gets the strictest action (block > mask >
hash > pseudonymise). The analyzer failing or timing out refuses the request (503 pii_unavailable) unless
every applying rule says `on_error: fail_open`, which passes it unchanged and records that. The audit event
gets entity types, counts and actions (ctx.pii), never a value.
"""

from collections import Counter
from collections.abc import AsyncIterator, Callable

from gateway import codec
from gateway.errors import PiiUnavailable, PolicyViolation
from gateway.guardrails import texts
from gateway.pii.conversations import Conversations
from gateway.pii.engine import PiiEngine, PiiUnavailableError
from gateway.pii.output import OutputMasker, mask_answer
from gateway.pii.restore import StreamRestorer, restore_json
from gateway.pii.vault import Action, Vault, redact
from gateway.pipeline import RequestContext
from gateway.policy.compiled import Effective
from gateway.policy.engine import Decision

STRICTNESS: dict[Action, int] = {"block": 3, "mask": 2, "hash": 1, "pseudonymise": 0}


def merged_actions(effective: Effective) -> tuple[dict[str, Action], dict[str, Action], float, bool]:
    """(enforced entity → strictest action, shadowed entity → action, lowest score threshold, fail_open)."""
    enforced: dict[str, Action] = {}
    shadowed: dict[str, Action] = {}
    for ref, rule in effective.pii:
        target = shadowed if ref.action == "shadow" else enforced
        for entity, action in rule.entities.items():
            if entity not in target or STRICTNESS[action] > STRICTNESS[target[entity]]:
                target[entity] = action
    threshold = min(rule.score_threshold for _, rule in effective.pii)
    fail_open = all(rule.on_error == "fail_open" for _, rule in effective.pii)
    return enforced, shadowed, threshold, fail_open


class Redact:
    def __init__(
        self, engine: PiiEngine, salt: bytes, conversations: Conversations | None = None, header: str = ""
    ) -> None:
        self.engine = engine
        self.salt = salt
        self.conversations = conversations
        self.header = header.lower()

    async def __call__(self, ctx: RequestContext) -> None:
        effective = ctx.policy
        if effective is None or not effective.pii:
            return
        enforced, shadowed, threshold, fail_open = merged_actions(effective)
        slots = texts.request_slots(ctx.endpoint, ctx.body)
        strings = [slot.get() for slot in slots]
        try:
            found = await self.engine.find(strings, frozenset(enforced) | frozenset(shadowed), threshold)
        except PiiUnavailableError as exc:
            _record(ctx, "shadow", f"analyzer failed: {exc}"[:200])
            if fail_open:
                return
            raise PiiUnavailable("Personal data could not be checked right now; the request was not sent.") from exc
        if not any(found):
            return
        spans = dict(enumerate(found))
        conversation = ctx.headers.get(self.header) if self.conversations is not None and self.header else None
        vault = Vault()
        if conversation and self.conversations is not None and any(spans.values()):
            vault.preload(await self.conversations.load(conversation))
        self._apply(ctx, effective, slots, strings, spans, enforced, shadowed, vault)
        if conversation and self.conversations is not None and ctx.vault is not None:
            await self.conversations.save(conversation, vault.issued_since_preload())

    def _apply(self, ctx, effective, slots, strings, spans, enforced, shadowed, vault) -> None:  # type: ignore[no-untyped-def]
        seen: Counter[str] = Counter(span.entity for found in spans.values() for span in found)
        ref = effective.pii[0][0]
        for entity, count in sorted(seen.items()):
            if entity in shadowed and entity not in enforced:
                _record(ctx, "shadow", f"{entity} x{count}")
        blocked = sorted(entity for entity in seen if enforced.get(entity) == "block")
        if blocked:
            for entity in blocked:
                _record(ctx, "block", f"{entity} x{seen[entity]}")
            ctx.pii = [{"entity": e, "count": seen[e], "action": "block"} for e in blocked]
            message = f"The request contains personal data that may not be sent: {', '.join(blocked)}."
            raise PolicyViolation(message, policy=ref.policy, rule=ref.rule)
        actions = {entity: action for entity, action in enforced.items() if action != "block"}
        if not actions:
            return
        changed = False
        for index, found in spans.items():
            kept = [span for span in found if span.entity in actions]
            if kept:
                slots[index].set(redact(strings[index], kept, actions, vault, self.salt))
                changed = True
        if not changed:
            return
        ctx.raw_body = codec.dumps(ctx.body)
        ctx.vault = vault
        ctx.pii = [{"entity": e, "count": n, "action": a} for (e, a), n in sorted(vault.counts().items())]
        for item in ctx.pii:
            detail = f"{item['entity']} x{item['count']} {item['action']}"
            _record(ctx, "redact", detail)


def _record(ctx: RequestContext, action: str, detail: str, where: str = "input") -> None:
    """A decision of the first pii rule in force (the rules act as one)."""
    assert ctx.policy is not None
    ref = ctx.policy.pii[0][0]
    decision = Decision(ref.policy, ctx.policy.revision, ref.rule, "pii", action, where, detail, 0)  # type: ignore[arg-type]
    ctx.decisions.append(decision)


class MaskAnswer:
    """Right after Forward, for rules with `output: mask`: values the model produced masked, in a JSON answer
    at once or in a stream as it flows (before KeepAnswer, so stored bodies never hold them either)."""

    def __init__(self, engine: PiiEngine, salt: bytes, window: int) -> None:
        self.engine = engine
        self.salt = salt
        self.window = window

    async def __call__(self, ctx: RequestContext) -> None:
        result = ctx.result
        if result is None or result.status != 200:
            return
        masker = OutputMasker.of(ctx.policy, self.engine, self.salt, self.window)
        if masker is None:
            return
        if not isinstance(result.body, bytes):
            result.body = _streamed(ctx, StreamRestorer(ctx.endpoint, Vault(), masker, _refusal(ctx)), result.body)
            return
        try:
            result.body = await mask_answer(ctx.endpoint, result.body, masker)
        except PiiUnavailableError as exc:
            _unchecked(ctx, exc)
            if not masker.fail_open:
                raise PiiUnavailable(_UNCHECKED) from exc
        _masked(ctx, masker)


class RestorePii:
    """After MaskAnswer and KeepAnswer: the request's pseudonyms put back in the answer the client gets."""

    async def __call__(self, ctx: RequestContext) -> None:
        vault, result = ctx.vault, ctx.result
        if vault is None or not vault.originals or result is None or result.status != 200:
            return
        if isinstance(result.body, bytes):
            result.body = restore_json(ctx.endpoint, result.body, vault)
        else:
            result.body = _streamed(ctx, StreamRestorer(ctx.endpoint, vault), result.body)


_UNCHECKED = "Personal data in the answer could not be checked right now; the answer was withheld."


async def _streamed(
    ctx: RequestContext, restorer: StreamRestorer, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    masker, stream = restorer.masker, restorer.run(chunks)
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
        if restorer.unchecked is not None:
            _unchecked(ctx, restorer.unchecked)
        if masker is not None:
            _masked(ctx, masker)


def _refusal(ctx: RequestContext) -> Callable[[PiiUnavailableError], bytes]:
    def refused(exc: PiiUnavailableError) -> bytes:
        _unchecked(ctx, exc)
        ctx.error = PiiUnavailable(_UNCHECKED)
        return b"data: " + ctx.error.render() + b"\n\n"

    return refused


def _masked(ctx: RequestContext, masker: OutputMasker) -> None:
    """The values masked in the answer: into the audit event's pii column and the decisions."""
    items = masker.audit_items()
    if not items or ctx.policy is None:
        return
    ctx.pii.extend(items)
    for item in items:
        _record(ctx, "redact", f"{item['entity']} x{item['count']} {item['action']}", "output")


def _unchecked(ctx: RequestContext, exc: PiiUnavailableError) -> None:
    if ctx.policy is not None:
        _record(ctx, "shadow", f"answer not checked: {exc}"[:200], "output")
