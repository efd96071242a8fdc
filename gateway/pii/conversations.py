"""Pseudonyms that stay the same across a conversation: the same address is `<EMAIL_ADDRESS_1>` in every turn.

A request that carries the conversation header (`pii.conversation_header`, e.g. `x-conversation-id`) has its
vault seeded with the pseudonyms already issued in that conversation, and the new ones are saved back before
the upstream is called. The mapping lives where rate limits live: one Redis hash per conversation
(`{gw}:pii:<sha256 of the id>`, placeholder → value) when `limits.redis_url` is set, else in the process; it
expires `pii.conversation_ttl` seconds after its last use. Values are stored encrypted (AES-256-GCM under
GATEWAY_MASTER_KEY, bound to the conversation's key), so Redis never holds personal data in clear.

If the store cannot be reached, the request is still protected: its pseudonyms are just not stable.
"""

import base64
import hashlib
import logging
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway.pii")
NONCE_BYTES = 12
MAX_LOCAL = 10_000  # conversations kept in the process (oldest dropped first)


class Conversations:
    def __init__(self, master_key: bytes, ttl: int, prefix: str, redis: Any | None = None) -> None:
        self.cipher = AESGCM(master_key)
        self.ttl = ttl
        self.prefix = prefix
        self.redis = redis
        self._local: dict[str, tuple[float, dict[str, bytes]]] = {}

    def key(self, conversation: str) -> str:
        digest = hashlib.sha256(conversation.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return "{" + self.prefix + "}:pii:" + digest

    async def load(self, conversation: str) -> dict[str, str]:
        """placeholder → value of every pseudonym issued so far in the conversation ({} if none or unreachable)."""
        key = self.key(conversation)
        try:
            stored = await self._read(key)
        except Exception as exc:  # the store is down: this request's pseudonyms are not stable, still safe
            log.warning("conversation pseudonyms unavailable (%s): using per-request pseudonyms", exc)
            return {}
        out = {}
        for placeholder, sealed in stored.items():
            try:
                out[placeholder] = self._open(key, sealed)
            except (InvalidTag, ValueError):
                log.warning("a conversation pseudonym did not decrypt (another master key?); it is ignored")
        return out

    async def save(self, conversation: str, entries: dict[str, str]) -> None:
        if not entries:
            return
        key = self.key(conversation)
        sealed = {placeholder: self._seal(key, value) for placeholder, value in entries.items()}
        try:
            await self._write(key, sealed)
        except Exception as exc:
            log.warning("conversation pseudonyms could not be saved (%s)", exc)

    def _seal(self, key: str, value: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return base64.b64encode(
            nonce + self.cipher.encrypt(nonce, value.encode("utf-8", "surrogatepass"), key.encode())
        )

    def _open(self, key: str, sealed: bytes) -> str:
        raw = base64.b64decode(sealed)
        plain = self.cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key.encode())
        return plain.decode("utf-8", "surrogatepass")

    async def _read(self, key: str) -> dict[str, bytes]:
        if self.redis is not None:
            stored = await self.redis.hgetall(key)
            if stored:
                await self.redis.expire(key, self.ttl)
            return {k.decode(): v for k, v in stored.items()}
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._local.pop(key, None)
            return {}
        return dict(entry[1])

    async def _write(self, key: str, sealed: dict[str, bytes]) -> None:
        if self.redis is not None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=sealed)
                pipe.expire(key, self.ttl)
                await pipe.execute()
            return
        _, known = self._local.pop(key, (0.0, {}))
        self._local[key] = (time.monotonic() + self.ttl, {**known, **sealed})
        while len(self._local) > MAX_LOCAL:
            self._local.pop(next(iter(self._local)))
