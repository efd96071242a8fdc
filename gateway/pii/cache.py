"""Analyses already made, remembered by text: the same system prompt, the same few-shot examples and every
earlier turn of a conversation come back with each request, and need not go through Presidio again.

    cache = Findings(entries)                      per gateway worker; entries=0 turns it off
    key = cache.key(text, entities, threshold)     keyed BLAKE2b of the text and what was asked
    cache.get(key) -> tuple[Span, ...] | None
    cache.put(key, spans)

Bounded (least recently used goes first), in memory only, and it never holds a text: the key is a keyed
hash (a random key per process, so a key cannot be checked against guessed texts outside it) and the value
is positions and entity types.
"""

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence

from gateway.pii.vault import Span


class Findings:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.hits = 0
        self.misses = 0
        self._secret = os.urandom(32)
        self._found: OrderedDict[bytes, tuple[Span, ...]] = OrderedDict()

    def key(self, text: str, entities: Sequence[str], threshold: float) -> bytes:
        digest = hashlib.blake2b(key=self._secret, digest_size=16)
        digest.update(f"{threshold!r}|{','.join(entities)}|".encode())
        digest.update(text.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def get(self, key: bytes) -> tuple[Span, ...] | None:
        found = self._found.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._found.move_to_end(key)
        return found

    def put(self, key: bytes, spans: Sequence[Span]) -> None:
        if self.entries <= 0:
            return
        self._found[key] = tuple(spans)
        self._found.move_to_end(key)
        while len(self._found) > self.entries:
            self._found.popitem(last=False)

    def status(self) -> dict[str, int]:
        return {"entries": len(self._found), "hits": self.hits, "misses": self.misses}
