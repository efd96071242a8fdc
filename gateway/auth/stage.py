"""Pipeline stage 1: the virtual key on the request → the principal it stands for, or 401."""

from gateway.auth.keys import KeyStore, Principal
from gateway.errors import AuthenticationFailed
from gateway.pipeline import RequestContext

MESSAGES = {
    "missing": "You didn't provide an API key. Send it as 'Authorization: Bearer gk-...'.",
    "invalid": "Incorrect API key provided.",
    "expired": "This API key has expired.",
    "revoked": "This API key has been revoked.",
}


class Authenticate:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.principal = authenticate(self.keys, ctx.api_key)


def authenticate(keys: KeyStore, api_key: str | None) -> Principal:
    if not api_key:
        raise AuthenticationFailed(MESSAGES["missing"])
    principal, state = keys.authenticate(api_key)
    if principal is None:
        raise AuthenticationFailed(MESSAGES[state])
    return principal
