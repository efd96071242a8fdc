"""The pricing table and cost arithmetic behind budgets: what a request cost, and the most it can cost.

Prices come from the shipped table (data/prices.yaml, USD per 1M tokens) and are held as integer
micro-dollars (1 USD = 1_000_000) per 1M tokens, so every cost is computed with integers and rounded up to
the next micro-dollar: no floats, no drift between a reservation and its settlement. A model the table does
not know has no price (`PriceTable.lookup` returns None); callers charge it `FREE` unless gateway.yaml
prices it.
"""

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

MICRO = 1_000_000
DEFAULT_PATH = Path(__file__).parent / "data" / "prices.yaml"
FIELDS = frozenset({"input", "output", "cached_input", "max_output_tokens"})

# Bedrock ("us.anthropic.claude-...") and provider-path ("openai/gpt-4o") prefixes.
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z]+\.)?anthropic\.")
# One removable suffix: "-latest", a date ("-2024-08-06", "-20241022"), a Vertex version ("-v2@20241022",
# "@20250514"), a Bedrock version ("-v2:0") or Anthropic's "-0" alias ("claude-sonnet-4-0").
_SUFFIX = re.compile(r"(?:-latest|-\d{4}-\d{2}-\d{2}|-\d{8}|(?:-v\d+)?@\d{8}|-v\d+:\d+|(?<=-\d)-0)$")


def usd_to_micro(value: object, where: str) -> int:
    """An exact, non-negative USD amount (YAML number or string) as integer micro-dollars."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{where}: expected a USD amount, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{where}: expected a USD amount, got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"{where}: expected a USD amount, got {value!r}")
    if amount < 0:
        raise ValueError(f"{where}: a price cannot be negative, got {value!r}")
    micro = amount * MICRO
    if micro != micro.to_integral_value():
        raise ValueError(f"{where}: {value!r} is finer than a micro-dollar (at most 6 decimal places)")
    return int(micro)


@dataclass(frozen=True)
class Price:
    """Micro-USD per 1M tokens (USD 2.50 per 1M tokens is 2_500_000); max_output_tokens as documented."""

    input: int
    output: int
    cached_input: int
    max_output_tokens: int | None = None

    @classmethod
    def of(
        cls,
        input: object,
        output: object,
        cached_input: object = None,
        max_output_tokens: object = None,
        where: str = "",
    ) -> "Price":
        """A price from USD per 1M tokens; cached input defaults to the input price."""
        input_micro = usd_to_micro(input, _at(where, "input"))
        cached = input_micro if cached_input is None else usd_to_micro(cached_input, _at(where, "cached_input"))
        return cls(
            input=input_micro,
            output=usd_to_micro(output, _at(where, "output")),
            cached_input=cached,
            max_output_tokens=_max_tokens(max_output_tokens, _at(where, "max_output_tokens")),
        )


FREE = Price(0, 0, 0)


@dataclass(slots=True)
class Usage:
    """Tokens of one request; cached_input_tokens are a part of input_tokens, as in OpenAI's usage. Built for
    every request: a plain slots dataclass (a frozen one builds several times slower); nothing changes it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_of(usage: object) -> Usage | None:
    """The usage of an OpenAI answer of any endpoint (chat/completions, embeddings, Responses); None if not a dict.

    Missing, null or non-integer counts are 0: a malformed usage never raises."""
    if not isinstance(usage, dict):
        return None
    return Usage(
        input_tokens=_first_count(usage.get("prompt_tokens"), usage.get("input_tokens")),
        output_tokens=_first_count(usage.get("completion_tokens"), usage.get("output_tokens")),
        cached_input_tokens=_first_count(
            _cached(usage, "prompt_tokens_details"), _cached(usage, "input_tokens_details")
        ),
    )


def cost(price: Price, usage: Usage) -> int:
    """Micro-USD for a request's usage, rounded up; cached tokens (clamped to the input) at the cached rate."""
    input_tokens = max(usage.input_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), input_tokens)
    output_tokens = max(usage.output_tokens, 0)
    total = (input_tokens - cached) * price.input + cached * price.cached_input + output_tokens * price.output
    return _ceil_per_million(total)


def max_cost(price: Price, input_tokens: int, max_output_tokens: int) -> int:
    """Micro-USD if no input token is cached and the answer uses every one of max_output_tokens, rounded up."""
    return _ceil_per_million(max(input_tokens, 0) * price.input + max(max_output_tokens, 0) * price.output)


class PriceTable:
    """Prices by model name; `lookup` also finds dated, prefixed, aliased and fine-tuned names of a known model."""

    __slots__ = ("_by_lower", "_prices")

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices: Mapping[str, Price] = MappingProxyType(dict(prices))
        self._by_lower: Mapping[str, Price] = MappingProxyType({name.lower(): p for name, p in prices.items()})

    def lookup(self, model: str) -> Price | None:
        """The price of a model, or None if the table does not know it (nor its base model)."""
        if model in self._prices:
            return self._prices[model]
        for candidate in _candidates(model):
            if candidate in self._by_lower:
                return self._by_lower[candidate]
        return None

    def names(self) -> tuple[str, ...]:
        return tuple(self._prices)

    def merged(self, overrides: Mapping[str, Price]) -> "PriceTable":
        """This table with overrides (e.g. from gateway.yaml) added or replacing entries of the same name."""
        return PriceTable({**self._prices, **overrides})


def load_table(path: Path | None = None) -> PriceTable:
    """The pricing table of a YAML file; the shipped one (parsed once per process) by default."""
    if path is None:
        return _default_table()
    return _parse(path)


@functools.cache
def _default_table() -> PriceTable:
    return _parse(DEFAULT_PATH)


def _parse(path: Path) -> PriceTable:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or set(document) != {"models"} or not isinstance(document["models"], dict):
        raise ValueError(f"{path}: expected a single top-level mapping `models:` of model name to price")
    return PriceTable({_name(path, name): _entry(path, name, entry) for name, entry in document["models"].items()})


def _name(path: Path, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{path}: models: a model name must be a non-empty string, got {name!r}")
    return name


def _entry(path: Path, name: str, entry: object) -> Price:
    where = f"{path}: models.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with input and output, got {entry!r}")
    unknown = sorted(str(key) for key in entry if key not in FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(FIELDS))})")
    missing = [key for key in ("input", "output") if key not in entry]
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r}")
    return Price.of(
        entry["input"],
        entry["output"],
        cached_input=entry.get("cached_input"),
        max_output_tokens=entry.get("max_output_tokens"),
        where=where,
    )


def _candidates(model: str) -> Iterator[str]:
    """Lower-cased name, then without provider / fine-tune prefix, then with suffixes removed one by one."""
    name = model.strip().lower()
    yield name
    name = _BEDROCK_PREFIX.sub("", name.rsplit("/", 1)[-1])
    if name.startswith("ft:"):
        name = name.split(":")[1]
    yield name
    while (shorter := _SUFFIX.sub("", name, count=1)) != name and shorter:
        name = shorter
        yield name


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field


def _max_tokens(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: expected a positive whole number of tokens, got {value!r}")
    return value


def _cached(usage: dict[Any, Any], key: str) -> object:
    details = usage.get(key)
    return details.get("cached_tokens") if isinstance(details, dict) else None


def _first_count(*values: object) -> int:
    """The first value that is a token count (a non-negative int), else 0."""
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def _ceil_per_million(total: int) -> int:
    return -(-total // MICRO)
