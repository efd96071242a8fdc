"""The audit event of one request, built from its RequestContext when the request ends, whatever the outcome.

One flat JSON object per request (the columns are documented in gateway.audit.schema). It never holds a
prompt, an answer or a key in the clear: the texts are represented by keyed hashes (HMAC-SHA256 under the
installation's audit salt, so a short prompt cannot be recovered by hashing guesses), policy decisions by what
matched (a term, a secret kind), never by the user's text. With `audit.bodies` the `body` column holds the
redacted bodies encrypted under the team's key (gateway.audit.bodies), otherwise "".
"""

import hmac
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import codec
from gateway.pipeline import RequestContext
from gateway.policy.engine import Decision

if TYPE_CHECKING:
    from gateway.audit.bodies import Bodies

SALT_BYTES = 32


def load_or_create_salt(path: Path) -> bytes:
    """The installation's audit salt: created once (mode 600, atomically, so racing workers agree), then read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker is writing it right now
            salt = path.read_bytes()
            if len(salt) == SALT_BYTES:
                return salt
            time.sleep(0.01)
        raise RuntimeError(f"the audit salt {path} is damaged: it should hold {SALT_BYTES} bytes") from None
    salt = os.urandom(SALT_BYTES)
    with os.fdopen(fd, "wb") as handle:
        handle.write(salt)
    return salt


def build(ctx: RequestContext, salt: bytes, bodies: "Bodies | None" = None) -> dict[str, Any]:
    """The audit event of a finished request (called once, by the Audit final stage); `bodies` seals its body."""
    principal, result, error = ctx.principal, ctx.result, ctx.error
    status = _status(ctx)
    answer = result.body if result is not None and isinstance(result.body, bytes) else b""
    if ctx.usage is not None:  # counted by the Settle stage (streams a client abandoned included)
        tokens_in, tokens_out = ctx.usage.input_tokens, ctx.usage.output_tokens
    else:
        usage = ctx.stream_usage or (_usage(answer) if status == 200 else {})
        tokens_in = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0)
        tokens_out = int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0)
    ended = time.time()
    deployment = ctx.deployment
    event_id, team = str(uuid.uuid4()), principal.team if principal else ""
    return {
        "event_id": event_id,
        "ts": _iso(ctx.started_at),
        "ended": _iso(ended),
        "request_id": ctx.request_id,
        "key_id": principal.key_id if principal else "",
        "key_name": principal.name if principal else "",
        "team": team,
        "end_user": str(ctx.body.get("user") or "")[:256],
        "route": ctx.endpoint,
        "model_requested": str(ctx.body.get("model") or "")[:256],
        "model_served": deployment.upstream_model if deployment else "",
        "provider": deployment.provider if deployment else "",
        "deployment": deployment.label if deployment else "",
        "attempts": ctx.attempts,
        "status": status,
        "error_type": error.type if error is not None else "",
        "error_code": (error.code or "") if error is not None else "",
        "stream": ctx.stream,
        "client_disconnected": ctx.client_disconnected,
        "policy_revision": ctx.policy.revision if ctx.policy is not None else "",
        "decisions": [_decision(d) for d in ctx.decisions],
        "pii": ctx.pii,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_micro_usd": ctx.cost_micro_usd,
        "latency_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
        "upstream_ms": round(ctx.upstream_ms, 3) if ctx.upstream_ms is not None else 0.0,
        "ttft_ms": round(ctx.ttft_ms, 3) if ctx.ttft_ms is not None else None,
        "client_ip": ctx.client,
        "user_agent": ctx.headers.get("user-agent", "")[:512],
        "prompt_hash": _keyed_hash(salt, ctx.raw_body),
        "answer_hash": _keyed_hash(salt, answer) if answer else ctx.answer_digest,
        "body": bodies.column(ctx, event_id, team) if bodies is not None else "",
    }


def _decision(d: Decision) -> dict[str, str]:
    return {
        "policy": d.policy,
        "rule": d.rule,
        "kind": d.kind,
        "action": d.action,
        "where": d.where,
        "detail": d.detail,
    }


def _status(ctx: RequestContext) -> int:
    """What the client got: a started stream is a 200 even if it ended with an error event."""
    result, error = ctx.result, ctx.error
    if result is not None and not isinstance(result.body, bytes) and result.status == 200:
        return 200
    if error is not None:
        return error.status
    return result.status if result is not None else 0


def _usage(answer: bytes) -> dict[str, Any]:
    if b'"usage"' not in answer:
        return {}
    try:
        usage = codec.loads(answer).get("usage")
    except (codec.JSONDecodeError, AttributeError):
        return {}
    return usage if isinstance(usage, dict) else {}


def _keyed_hash(salt: bytes, data: bytes) -> str:
    return hmac.digest(salt, data, "sha256").hex()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
