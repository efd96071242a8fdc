"""Conversation pseudonyms in a real Redis: stable across requests, encrypted at rest, expiring."""

import os

import redis.asyncio as aioredis

from gateway.pii.conversations import Conversations
from gateway.pii.vault import Span, Vault, redact
from tests.redis_server import RedisServer


async def test_pseudonyms_survive_between_requests_and_redis_never_holds_the_value(redis_server: RedisServer) -> None:
    redis_server.flush()
    client = aioredis.Redis.from_url(redis_server.url)
    store = Conversations(os.urandom(32), ttl=120, prefix="gw", redis=client)
    try:
        first = Vault()
        text = "mail alice@example.com"
        assert redact(text, [Span(5, 22, "EMAIL_ADDRESS")], {"EMAIL_ADDRESS": "pseudonymise"}, first, b"s") == (
            "mail <EMAIL_ADDRESS_1>"
        )
        await store.save("conv-1", first.issued_since_preload())
        second = Vault()
        second.preload(await store.load("conv-1"))
        text = "bob@example.org and alice@example.com"
        spans = [Span(0, 15, "EMAIL_ADDRESS"), Span(20, 37, "EMAIL_ADDRESS")]
        out = redact(text, spans, {"EMAIL_ADDRESS": "pseudonymise"}, second, b"s")
        assert out == "<EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1>"
        assert second.issued_since_preload() == {"<EMAIL_ADDRESS_2>": "bob@example.org"}
        raw = redis_server.client().hgetall(store.key("conv-1"))
        assert list(raw) == [b"<EMAIL_ADDRESS_1>"] and b"alice" not in raw[b"<EMAIL_ADDRESS_1>"]
        assert 0 < redis_server.client().ttl(store.key("conv-1")) <= 120
        # another master key cannot read it: the pseudonyms are just not stable, nothing breaks
        assert await Conversations(os.urandom(32), 120, "gw", client).load("conv-1") == {}
    finally:
        await client.aclose()


async def test_an_unreachable_store_means_per_request_pseudonyms() -> None:
    from tests.servers import free_port

    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    store = Conversations(os.urandom(32), ttl=120, prefix="gw", redis=client)
    try:
        assert await store.load("conv") == {}
        await store.save("conv", {"<EMAIL_ADDRESS_1>": "a@b.c"})  # logged, not raised
    finally:
        await client.aclose()
