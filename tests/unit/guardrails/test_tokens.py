"""Token counting: exact tiktoken counts for OpenAI models from the vendored encoding files, a conservative
estimate for the rest, and OpenAI's chat overhead."""

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.guardrails import tokens


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini-2025-04-16", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base"),
        ("GPT-4O", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-3-5-sonnet", None),
        ("llama-3.1-70b", None),
        ("mock-model", None),
        ("gpt-40", None),
        ("", None),
    ],
)
def test_openai_models_map_to_their_encoding(model: str, encoding: str | None) -> None:
    assert tokens.encoding_for(model) == encoding


# Token ids as OpenAI's cookbook and tiktoken's README show them.
KNOWN = [
    ("hello world", "o200k_base", [24912, 2375]),
    ("hello world", "cl100k_base", [15339, 1917]),
    ("tiktoken is great!", "cl100k_base", [83, 1609, 5963, 374, 2294, 0]),
    ("antidisestablishmentarianism", "cl100k_base", [519, 85342, 34500, 479, 8997, 2191]),
    ("antidisestablishmentarianism", "o200k_base", [493, 129901, 376, 160388, 21203, 2367]),
    ("2 + 2 = 4", "cl100k_base", [17, 489, 220, 17, 284, 220, 19]),
    ("お誕生日おめでとう", "cl100k_base", [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]),
    ("お誕生日おめでとう", "o200k_base", [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]),
]


@pytest.mark.parametrize(("value", "name", "ids"), KNOWN)
def test_the_vendored_encodings_give_the_official_token_ids(value: str, name: str, ids: list[int]) -> None:
    encoding = tokens.encoding(name)
    assert encoding.encode_ordinary(value) == ids
    assert encoding.decode(ids) == value


def test_the_encodings_have_the_official_vocabularies_and_special_tokens() -> None:
    o200k, cl100k = tokens.encoding("o200k_base"), tokens.encoding("cl100k_base")
    assert (o200k.n_vocab, cl100k.n_vocab) == (200019, 100277)
    assert o200k.special_tokens_set == {"<|endoftext|>", "<|endofprompt|>"}
    assert "<|fim_prefix|>" in cl100k.special_tokens_set


def test_count_uses_the_models_encoding() -> None:
    assert tokens.count(["hello world"], "gpt-4o") == 2
    assert tokens.count(["hello world"], "gpt-4") == 2
    assert tokens.count(["お誕生日おめでとう"], "gpt-4o") == 8
    assert tokens.count(["お誕生日おめでとう"], "gpt-3.5-turbo") == 9
    assert tokens.count(["hello world", "tiktoken is great!"], "gpt-4") == 2 + 6


def test_special_token_text_counts_as_plain_text() -> None:
    assert tokens.count(["<|endoftext|>"], "gpt-4o") == 7
    assert tokens.count(["<|endoftext|>"], "gpt-4") == 7


def test_chat_messages_add_three_tokens_each_and_three_for_the_reply() -> None:
    assert tokens.count(["hello world"], "gpt-4o", messages=1) == 2 + 3 + 3
    assert tokens.count(["hello world", "hello world"], "gpt-4o", messages=2) == 4 + 6 + 3
    assert tokens.count([], "gpt-4o", messages=0) == 0
    assert tokens.count(["abcd"], "some-model", messages=1) == 1 + 3 + 3


def test_other_models_get_the_conservative_estimate() -> None:
    assert tokens.count(["hello world"], "claude-3-5-sonnet") == 3  # ceil(11 / 4)
    assert tokens.count(["abcd", "abcde"], "claude-3-5-sonnet") == 1 + 2
    assert tokens.count(["机密文件"], "claude-3-5-sonnet") == 4  # one per non-ASCII character
    assert tokens.count(["Grüße"], "claude-3-5-sonnet") == 1 + 2  # "Gre" -> 1, "ü", "ß"
    assert tokens.estimate("") == 0


def test_the_estimate_is_near_the_real_count_for_prose_and_code() -> None:
    samples = [
        "The quick brown fox jumps over the lazy dog. Please summarise the meeting notes below. " * 20,
        "def count(texts: Sequence[str]) -> int:\n    return sum(len(t) for t in texts)\n" * 10,
        "Die Straße ist gesperrt; bitte nehmen Sie die Umleitung über München. " * 10,
        "今天我们讨论了项目的进度和下一步的计划。请帮我总结会议纪要并列出行动项。" * 10,
    ]
    for sample in samples:
        real = len(tokens.encoding("o200k_base").encode_ordinary(sample))
        assert 0.85 * real <= tokens.estimate(sample) <= 1.5 * real


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "\x00" * 100, "🙂" * 50, "a" * 100_000, "1" * 100_000])
def test_counting_never_raises(value: str) -> None:
    for model in ["gpt-4o", "gpt-4", "claude"]:
        assert tokens.count([value], model) >= 1


def test_an_altered_encoding_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setattr(tokens, "DATA", tmp_path)
    with pytest.raises(tokens.EncodingDataError, match="is not the official one: its SHA-256 is"):
        tokens._load_vendored("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken")


def test_a_missing_encoding_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "DATA", tmp_path)
    with pytest.raises(tokens.EncodingDataError, match="cannot read the vendored encoding file"):
        tokens._load_vendored("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken")


def test_only_the_vendored_encodings_can_be_loaded() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'p50k_base'"):
        tokens.encoding("p50k_base")


def test_importing_the_module_loads_no_encoding() -> None:
    code = "import gateway.guardrails.tokens as t; print(t.encoding.cache_info().currsize)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0"


def test_an_encoding_is_loaded_once_per_process() -> None:
    assert tokens.encoding("o200k_base") is tokens.encoding("o200k_base")
