"""What a request may cost before it is sent, and what it did cost after: prices per deployment, token counts.

Pricing(settings)            each deployment's price: its own `price`, its model's, the shipped table by
                             upstream model name, then by the name clients use; else unpriced (free)
Pricing.reserve(...)         the most a request can cost on any deployment of its model or fallbacks
prompt_tokens(...)           the prompt's tokens as the model counts them (tiktoken for OpenAI models)
answer_cap(endpoint, body)   the request's own cap on the answer, times `n` choices (None: no cap)
produced_tokens(...)         the tokens of an answer a client abandoned, from the events it received
"""

import functools
import logging
from collections.abc import Iterable
from typing import Any

from gateway import codec
from gateway.guardrails import texts, tokens
from gateway.limits.prices import Price, PriceTable, load_table, max_cost, usd_to_micro
from gateway.settings import Deployment, ModelConfig, PriceSetting, Settings

log = logging.getLogger("gateway.limits")
CAP_FIELDS = {
    "chat/completions": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
}


def _price(setting: PriceSetting, where: str) -> Price:
    return Price(
        usd_to_micro(setting.input, where),
        usd_to_micro(setting.output, where),
        usd_to_micro(setting.cached_input if setting.cached_input is not None else setting.input, where),
        setting.max_output_tokens,
    )


class Pricing:
    def __init__(self, settings: Settings, table: PriceTable | None = None) -> None:
        table = table or load_table()
        self.models = {model.name: model for model in settings.models}
        self.prices: dict[Deployment, Price | None] = {}
        for model in settings.models:
            for deployment in model.deployments:
                setting = deployment.price or model.price
                where = f"models[{model.name}] deployment {deployment.label} price"
                price = _price(setting, where) if setting else None
                self.prices[deployment] = price or table.lookup(deployment.upstream_model) or table.lookup(model.name)
        # by identity first: hashing a Deployment (a dataclass of a dozen fields) costs more than the lookup
        self._by_id = {id(deployment): price for deployment, price in self.prices.items()}
        self._reserving: dict[str, tuple[Price, ...]] = {}  # model name → the prices `reserve` considers
        self.unpriced = sorted({d.label for d, p in self.prices.items() if p is None})
        if self.unpriced:
            log.warning(
                "no price for %s: their requests cost 0 against budgets (give the model a `price` in gateway.yaml)",
                ", ".join(self.unpriced),
            )

    def price(self, deployment: Deployment | None) -> Price | None:
        if deployment is None:
            return None
        price = self._by_id.get(id(deployment), _UNKNOWN)
        return self.prices.get(deployment) if price is _UNKNOWN else price

    def reserve(self, model: ModelConfig, input_tokens: int, cap: int | None, default_max: int) -> int:
        """The most the request can cost: every deployment of the model and of its fallbacks considered."""
        prices = self._reserving.get(model.name)
        if prices is None or model is not self.models.get(model.name):
            prices = self._prices_of(model)
        most = 0
        for price in prices:
            answer = cap if cap is not None else price.max_output_tokens or default_max
            most = max(most, max_cost(price, input_tokens, answer))
        return most

    def _prices_of(self, model: ModelConfig) -> tuple[Price, ...]:
        models = [model, *(self.models[name] for name in (*model.fallbacks, *model.context_window_fallbacks))]
        deployments = [deployment for candidate in models for deployment in candidate.deployments]
        prices = tuple(price for price in map(self.price, deployments) if price is not None)
        if model is self.models.get(model.name):
            self._reserving[model.name] = prices
        return prices


_UNKNOWN = Price(-1, -1, -1)  # a sentinel: not a deployment of the settings


def answer_cap(endpoint: str, body: dict[str, Any]) -> int | None:
    """The request's cap on the answer's tokens, times its `n` choices; 0 for embeddings; None without a cap."""
    if endpoint == "embeddings":
        return 0
    for name in CAP_FIELDS.get(endpoint, ()):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            n = body.get("n")
            return value * (n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1)
    return None


def tokenizer_of(model: ModelConfig) -> str:
    """The model name to count a model's tokens as: its first upstream model's if tiktoken knows it."""
    return _tokenizer(model.deployments[0].upstream_model, model.name)


def encoding_of(model: ModelConfig) -> str | None:
    """The tiktoken encoding a model's tokens are counted with, or None (estimated)."""
    return _encoding(model.deployments[0].upstream_model, model.name)


@functools.lru_cache(maxsize=1024)
def _tokenizer(upstream: str, name: str) -> str:
    return upstream if tokens.encoding_for(upstream) else name


@functools.lru_cache(maxsize=1024)
def _encoding(upstream: str, name: str) -> str | None:
    return tokens.encoding_for(_tokenizer(upstream, name))


def prompt_tokens(endpoint: str, body: dict[str, Any], model: ModelConfig) -> int:
    """The prompt's tokens (chat overhead included) plus the tool definitions', as the model counts them."""
    strings = [slot.get() for slot in texts.request_slots(endpoint, body)]
    for name in ("tools", "functions"):
        if body.get(name):
            strings.append(codec.dumps(body[name]).decode())
    messages = body.get("messages")
    count = len(messages) if endpoint == "chat/completions" and isinstance(messages, list) else 0
    return tokens.count(strings, tokenizer_of(model), messages=count)


def produced_tokens(endpoint: str, events: Iterable[bytes], model: ModelConfig) -> int:
    """The tokens of the answer text in the SSE `events` a client received (for a stream it abandoned)."""
    strings = [text for _, text in texts.sse_texts(endpoint, events)]
    return tokens.count(strings, tokenizer_of(model)) if strings else 0


def answer_tokens(endpoint: str, body: bytes, model: ModelConfig) -> int:
    """The tokens of a JSON answer's text (for an upstream that reports no usage)."""
    try:
        parsed = codec.loads(body)
    except codec.JSONDecodeError:
        return 0
    strings = [slot.get() for slot in texts.response_slots(endpoint, parsed)] if isinstance(parsed, dict) else []
    return tokens.count(strings, tokenizer_of(model)) if strings else 0
