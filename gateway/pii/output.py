"""Personal data the model produced itself, in the answer a client gets: a pii rule with `output: mask` has the
answer's texts analyzed like the prompt's, and each value found masked (`<EMAIL_ADDRESS>`), or hashed for an
entity the rule hashes, before the pseudonyms of the request are restored. So a value the client sent comes
back (it went upstream as a placeholder, which the analyzer does not take for personal data), and a value the
model made up or remembered does not.

    OutputMasker.of(effective, engine, salt, window) -> OutputMasker | None   None: no rule asks
    await masker.find(texts) -> [[Span]]     PiiEngine.find (pre-filter, then the pool); PiiUnavailableError passes up
    masker.apply(text, spans) -> str         spans replaced and counted (masker.counts)
    await mask_answer(endpoint, body, masker) -> bytes   a whole JSON answer

Streams are masked by gateway.pii.restore.StreamRestorer, which holds back the last `window` characters of
each stream key (a value can only be found once it is complete) and releases text in pieces of at least
`MIN_RELEASE` characters, so the analyzer runs once per piece, not once per token.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway import codec
from gateway.guardrails.texts import drop_logprobs, response_slots
from gateway.pii.engine import NER_ENTITIES, PiiEngine
from gateway.pii.vault import Action, Span, Vault, redact
from gateway.policy.compiled import Effective

MIN_RELEASE = 32  # characters a stream key releases at once, at least (unless it ends)


@dataclass
class OutputMasker:
    engine: PiiEngine
    actions: dict[str, Action]  # entity → mask or hash
    threshold: float
    salt: bytes
    window: int
    fail_open: bool
    counts: Vault = field(default_factory=Vault)  # only its counts: what was replaced in the answer

    @classmethod
    def of(cls, effective: Effective | None, engine: PiiEngine, salt: bytes, window: int) -> "OutputMasker | None":
        """The masker for the rules of `effective` that enforce (not shadow) `output: mask`, or None."""
        rules = (
            [rule for ref, rule in effective.pii if rule.output == "mask" and ref.action != "shadow"]
            if effective
            else []
        )
        actions: dict[str, Action] = {}
        for rule in rules:  # mask is stricter than hash: an entity hashed by every rule naming it is hashed
            for entity, action in rule.entities.items():
                if engine.ner or entity not in NER_ENTITIES:
                    actions[entity] = "mask" if actions.get(entity) == "mask" or action != "hash" else "hash"
        if not actions:
            return None
        threshold = min(rule.score_threshold for rule in rules)
        fail_open = all(rule.on_error == "fail_open" for rule in rules)
        return cls(engine, actions, threshold, salt, window, fail_open)

    async def find(self, texts: Sequence[str]) -> list[list[Span]]:
        """The values in each text (PiiEngine.find: texts the pre-filter clears are not analyzed)."""
        return await self.engine.find(texts, frozenset(self.actions), self.threshold)

    def apply(self, text: str, spans: Sequence[Span]) -> str:
        return redact(text, spans, self.actions, self.counts, self.salt) if spans else text

    def audit_items(self) -> list[dict[str, object]]:
        """What the audit event's pii column gets for the answer: entity, count, and `output_mask`/`output_hash`."""
        return [
            {"entity": e, "count": n, "action": f"output_{a}"} for (e, a), n in sorted(self.counts.counts().items())
        ]


async def mask_answer(endpoint: str, body: bytes, masker: OutputMasker) -> bytes:
    """A complete JSON answer with the values in every text the model produced masked (and its token log
    probabilities dropped when anything was: they spell out the original tokens); the body itself when
    nothing was found or it is not a JSON object."""
    parsed = codec.loads_object(body)
    if parsed is None:
        return body
    slots = response_slots(endpoint, parsed)
    found = await masker.find([slot.get() for slot in slots])
    changed = False
    for slot, spans in zip(slots, found, strict=True):
        if spans:
            masked = masker.apply(slot.get(), spans)
            if masked != slot.get():
                slot.set(masked)
                changed = True
    if not changed:
        return body
    drop_logprobs(endpoint, parsed)
    return codec.dumps(parsed)
