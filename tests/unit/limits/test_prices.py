"""Pricing table and cost arithmetic: integer micro-dollars rounded up, cached tokens at their own rate, usage of
every OpenAI endpoint, and model names (dated, prefixed, fine-tuned) that find their base price."""

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.limits import prices
from gateway.limits.prices import (
    FREE,
    MICRO,
    Price,
    PriceTable,
    Usage,
    cost,
    load_table,
    max_cost,
    usage_of,
    usd_to_micro,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


# --- amounts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (2.5, 2_500_000),
        ("2.50", 2_500_000),
        (0.15, 150_000),
        (0.075, 75_000),
        ("1e-1", 100_000),
        (1e-1, 100_000),
        (0, 0),
        (10, 10_000_000),
        ("0.000001", 1),
        (Decimal("1.100000"), 1_100_000),
    ],
)
def test_usd_amounts_become_exact_micro_dollars(value: object, micro: int) -> None:
    assert usd_to_micro(value, "here") == micro


def test_price_finer_than_a_micro_dollar_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gpt-x\.input: .*finer than a micro-dollar"):
        usd_to_micro("0.0000001", "gpt-x.input")
    with pytest.raises(ValueError, match="finer than a micro-dollar"):
        Price.of(0.1234567, 1)


@pytest.mark.parametrize("value", [-1, "-0.5", "abc", "", None, True, [1], float("nan"), "inf"])
def test_negative_or_non_numeric_amounts_are_refused_naming_where(value: object) -> None:
    with pytest.raises(ValueError, match=r"^models\.m\.output: "):
        usd_to_micro(value, "models.m.output")


def test_price_of_converts_usd_per_million_and_defaults_cached_to_input() -> None:
    assert Price.of(2.5, 10, cached_input=1.25, max_output_tokens=16384) == Price(
        2_500_000, 10_000_000, 1_250_000, 16384
    )
    assert Price.of("0.50", "1.50") == Price(input=500_000, output=1_500_000, cached_input=500_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        FREE.input = 1  # type: ignore[misc]


@pytest.mark.parametrize("bad", [0, -5, 1.5, "100", True])
def test_max_output_tokens_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(ValueError, match=r"m\.max_output_tokens: "):
        Price.of(1, 1, max_output_tokens=bad, where="m")


# --- cost -------------------------------------------------------------------------------------------------------


def test_cost_is_integer_micro_dollars_rounded_up() -> None:
    mini = Price.of(0.15, 0.60)
    assert cost(mini, Usage(input_tokens=1000)) == 150
    assert cost(mini, Usage(output_tokens=1000)) == 600
    assert cost(mini, Usage(input_tokens=1000, output_tokens=1000)) == 750
    # 1 token at 0.15 USD/1M is 0.15 micro-USD: charged as 1, never 0.
    assert cost(mini, Usage(input_tokens=1)) == 1
    # 7 tokens = 1.05 micro-USD -> 2.
    assert cost(mini, Usage(input_tokens=7)) == 2
    assert cost(mini, Usage()) == 0
    assert cost(FREE, Usage(input_tokens=10**9, output_tokens=10**9)) == 0
    result = cost(Price.of(2.5, 10), Usage(input_tokens=123_456, output_tokens=7_890))
    assert type(result) is int
    assert result == 308_640 + 78_900  # 123456 * 2.5 = 308640, 7890 * 10 = 78900


def test_cached_tokens_are_priced_at_the_cached_rate() -> None:
    gpt_4o = Price.of(2.50, 10.00, cached_input=1.25)
    # 1000 input of which 400 cached: 600 * 2.5 + 400 * 1.25 = 1500 + 500 micro-USD.
    assert cost(gpt_4o, Usage(input_tokens=1000, cached_input_tokens=400)) == 2000
    assert cost(gpt_4o, Usage(input_tokens=1000, cached_input_tokens=0)) == 2500


def test_cached_tokens_are_clamped_to_the_input_tokens() -> None:
    gpt_4o = Price.of(2.50, 10.00, cached_input=1.25)
    assert cost(gpt_4o, Usage(input_tokens=1000, cached_input_tokens=5000)) == 1250
    assert cost(gpt_4o, Usage(input_tokens=1000, cached_input_tokens=-5)) == 2500


def test_max_cost_assumes_no_cache_and_every_output_token_used() -> None:
    gpt_4o = Price.of(2.50, 10.00, cached_input=1.25, max_output_tokens=16384)
    assert max_cost(gpt_4o, 1000, 16384) == 2500 + 163_840
    assert max_cost(Price.of(0.15, 0.60), 1, 1) == 1  # 0.75 micro-USD, rounded up
    assert max_cost(gpt_4o, 1000, 100) >= cost(
        gpt_4o, Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=500)
    )


def test_large_usage_stays_exact() -> None:
    opus = Price.of(15, 75)
    assert cost(opus, Usage(input_tokens=10**12, output_tokens=10**12)) == 90 * 10**12


# --- usage ------------------------------------------------------------------------------------------------------


def test_usage_of_reads_chat_responses_and_embeddings_usage() -> None:
    chat = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 100},
    }
    assert usage_of(chat) == Usage(input_tokens=1200, output_tokens=300, cached_input_tokens=1024)
    responses = {
        "input_tokens": 900,
        "input_tokens_details": {"cached_tokens": 512},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 950,
    }
    assert usage_of(responses) == Usage(input_tokens=900, output_tokens=50, cached_input_tokens=512)
    assert usage_of({"prompt_tokens": 8, "total_tokens": 8}) == Usage(input_tokens=8)
    assert usage_of(chat).total == 1500  # type: ignore[union-attr]


@pytest.mark.parametrize("usage", [None, [], "usage", 5])
def test_usage_of_something_not_a_dict_is_none(usage: object) -> None:
    assert usage_of(usage) is None


def test_usage_of_treats_null_missing_and_odd_counts_as_zero() -> None:
    odd = {
        "prompt_tokens": None,
        "completion_tokens": "12",
        "prompt_tokens_details": None,
    }
    assert usage_of(odd) == Usage()
    assert usage_of({}) == Usage()
    assert usage_of(
        {"prompt_tokens": 5.0, "completion_tokens": True, "prompt_tokens_details": {"cached_tokens": -1}}
    ) == (Usage())
    assert usage_of({"prompt_tokens": 10, "prompt_tokens_details": ["x"]}) == Usage(input_tokens=10)


# --- names ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("openai/gpt-4o", "gpt-4o"),
        ("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("claude-sonnet-4@20250514", "claude-sonnet-4"),
        ("ft:gpt-4o-mini:acme::abc123", "gpt-4o-mini"),
        ("ft:gpt-4o-mini-2024-07-18:acme:custom:abc123", "gpt-4o-mini"),
        ("GPT-4O-Mini", "gpt-4o-mini"),
        (" gpt-4o ", "gpt-4o"),
    ],
)
def test_dated_model_names_find_their_base_price(model: str, base: str) -> None:
    table = load_table()
    assert base in table.names()
    assert table.lookup(model) == table.lookup(base)
    assert table.lookup(model) is not None


def test_gpt_4o_mini_is_never_priced_as_gpt_4o() -> None:
    table = load_table()
    mini = table.lookup("gpt-4o-mini-2024-07-18")
    assert mini is not None
    assert mini.input == 150_000
    assert mini != table.lookup("gpt-4o")


def test_a_snapshot_with_its_own_price_wins_over_its_base_name() -> None:
    table = load_table()
    assert table.lookup("gpt-4o-2024-05-13") == Price.of(5, 15, max_output_tokens=4096)
    assert table.lookup("gpt-4o-2024-11-20") == table.lookup("gpt-4o")


@pytest.mark.parametrize(
    "model",
    ["meta-llama/Llama-3.1-8B-Instruct", "mistral-large", "qwen2.5-72b", "claude-opus-4-9", "gpt-4o-nano", "", "gpt"],
)
def test_unknown_and_self_hosted_models_have_no_price(model: str) -> None:
    assert load_table().lookup(model) is None


def test_a_table_from_a_mapping_looks_up_exact_and_lower_cased_names() -> None:
    price = Price.of(1, 2)
    table = PriceTable({"My-Model": price})
    assert table.lookup("My-Model") is price
    assert table.lookup("my-model") is price
    assert table.lookup("MY-MODEL-latest") is price
    assert table.lookup("other") is None
    assert table.names() == ("My-Model",)


def test_merged_overrides_replace_and_add_entries() -> None:
    base = load_table()
    local = Price.of(0.1, 0.2)
    merged = base.merged({"gpt-4o": FREE, "llama-3.1-8b": local})
    assert merged.lookup("gpt-4o-2024-08-06") == FREE
    assert merged.lookup("llama-3.1-8b") == local
    assert base.lookup("gpt-4o") != FREE


# --- the shipped table ------------------------------------------------------------------------------------------

REQUIRED = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-3.5-turbo",
    "gpt-4-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-7-sonnet",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-3-haiku",
    "claude-3-opus",
]


def test_shipped_table_loads_and_every_entry_is_complete() -> None:
    table = load_table()
    assert set(REQUIRED) <= set(table.names())
    for name in table.names():
        price = table.lookup(name)
        assert price is not None
        assert price.input > 0, name
        assert 0 < price.cached_input <= price.input, name
        assert price.output >= 0, name
        if name.startswith("text-embedding-"):
            assert price.output == 0 and price.max_output_tokens is None, name
        else:
            assert price.output > price.input, name
            assert price.max_output_tokens is not None and price.max_output_tokens >= 4096, name


def test_shipped_prices_are_the_list_prices() -> None:
    table = load_table()
    assert table.lookup("gpt-4o") == Price(2_500_000, 10_000_000, 1_250_000, 16384)
    assert table.lookup("gpt-4o-mini") == Price(150_000, 600_000, 75_000, 16384)
    assert table.lookup("gpt-4.1") == Price(2_000_000, 8_000_000, 500_000, 32768)
    assert table.lookup("o3") == Price(2_000_000, 8_000_000, 500_000, 100_000)
    assert table.lookup("claude-sonnet-4") == Price(3_000_000, 15_000_000, 300_000, 64000)
    assert table.lookup("claude-opus-4") == Price(15_000_000, 75_000_000, 1_500_000, 32000)
    assert table.lookup("text-embedding-3-small") == Price(20_000, 0, 20_000)
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None
    assert cost(mini, Usage(input_tokens=1000)) == 150


def test_default_table_is_parsed_once_per_process() -> None:
    assert load_table() is load_table()
    assert prices._default_table.cache_info().currsize == 1


def test_a_table_file_loads_from_a_path(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  local-llm: {input: 0.1, output: '0.2', max_output_tokens: 2048}\n")
    table = load_table(path)
    assert table.names() == ("local-llm",)
    assert table.lookup("local-llm") == Price(100_000, 200_000, 100_000, 2048)
    assert load_table(path) is not table  # only the shipped table is cached


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  m: {input: 1, output: 2, cachedinput: 1}\n", r"models\.m: unknown field 'cachedinput'"),
        ("models:\n  m: {input: 1}\n", r"models\.m: missing field 'output'"),
        ("models:\n  m: {input: -1, output: 2}\n", r"models\.m\.input: .*negative"),
        ("models:\n  m: {input: 1, output: 0.0000001}\n", r"models\.m\.output: .*micro-dollar"),
        ("models:\n  m: {input: 1, output: two}\n", r"models\.m\.output: expected a USD amount"),
        ("models:\n  m: {input: 1, output: 2, max_output_tokens: lots}\n", r"models\.m\.max_output_tokens: "),
        ("models:\n  m: 3\n", r"models\.m: expected a mapping"),
        ("models:\n  7: {input: 1, output: 2}\n", "model name must be a non-empty string"),
        ("prices:\n  m: {input: 1, output: 2}\n", "top-level mapping `models:`"),
        ("models: []\n", "top-level mapping `models:`"),
        ("", "top-level mapping `models:`"),
    ],
)
def test_a_bad_table_is_refused_naming_the_model_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_table(write(tmp_path, text))


def test_micro_is_one_million() -> None:
    assert MICRO == 1_000_000
