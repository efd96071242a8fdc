"""Token counting for the `max_input_tokens` rule.

    encoding_for(model) -> str | None      "o200k_base", "cl100k_base" or None (no known tokenizer)
    count(texts, model, messages=0) -> int the tokens of `texts` as `model` counts them
    encoding(name) -> tiktoken.Encoding    one of the two encodings, loaded once per process on first use

OpenAI models are counted exactly with tiktoken: `encode_ordinary`, so text that looks like a special token
("<|endoftext|>") counts as the plain text it is. The encoding files are vendored in `data/` (gzipped copies
of OpenAI's official files; tiktoken cannot download them here), checked against their official SHA-256 when
they load. The split pattern and special tokens come from tiktoken's own `tiktoken_ext.openai_public`: its
o200k_base()/cl100k_base() run with their file loader swapped for one that reads the vendored copy.

Other models get an estimate: per text, ceil(ASCII characters / 4) plus one token per non-ASCII character.
Measured against o200k_base/cl100k_base it is close or above for prose and code (English 0.93-1.0 of the real
count, German 1.08, Chinese 0.97-1.4, Russian 1.7), but NOT an upper bound for dense text: JSON ~0.6, digit
runs ~0.5, base64 ~0.35, emoji ~0.4 of the real count.

Either way, `messages > 0` adds OpenAI's chat overhead: 3 tokens per message and 3 priming the reply.

Loading o200k_base takes ~0.4 s and ~80 MB the first time, so it happens only when a prompt could exceed a
limit: `upper_bound` (the UTF-8 bytes) settles every prompt shorter than the limit without a tokenizer, and the
CheckInput stage loads the encoding in a worker thread before the first count that needs it.
"""

import base64
import functools
import gzip
import hashlib
import math
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tiktoken
from tiktoken_ext import openai_public

DATA = Path(__file__).parent / "data"
# The decompressed SHA-256 of OpenAI's official files (the same that tiktoken_ext.openai_public expects).
SHA256: Mapping[str, str] = MappingProxyType(
    {
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    }
)
# Chat overhead per message, and for priming the reply (OpenAI's counting for current chat models).
TOKENS_PER_MESSAGE = 3
TOKENS_FOR_REPLY = 3

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss")
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002")


class EncodingDataError(RuntimeError):
    """A vendored encoding file is missing or is not the official one."""


def encoding_for(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI `model`, or None. A provider prefix ("openai/gpt-4o"), a fine-tune
    prefix ("ft:gpt-4o-mini:org::id") and date suffixes ("gpt-4o-2024-08-06") are allowed."""
    name = model.strip().lower().removeprefix("ft:").rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return None


def count(texts: Sequence[str], model: str, messages: int = 0) -> int:
    """The tokens of `texts` for `model` (exact for OpenAI models, else the estimate), plus the chat
    overhead when `messages` > 0."""
    name = encoding_for(model)
    if name is None:
        total = sum(estimate(text) for text in texts)
    else:
        encoder = encoding(name)
        total = sum(len(encoder.encode_ordinary(text)) for text in texts)
    if messages > 0:
        total += TOKENS_PER_MESSAGE * messages + TOKENS_FOR_REPLY
    return total


def upper_bound(texts: Sequence[str], messages: int = 0) -> int:
    """A bound no count exceeds, computed in about a microsecond per kilobyte: the UTF-8 bytes (every BPE token,
    and every estimated token, is at least one byte), plus the chat overhead. Texts within a limit by this
    bound need no tokenizer at all."""
    total = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    return total + (TOKENS_PER_MESSAGE * messages + TOKENS_FOR_REPLY if messages > 0 else 0)


def estimate(text: str) -> int:
    """ceil(ASCII characters / 4) + one token per non-ASCII character."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return math.ceil(ascii_chars / 4) + (len(text) - ascii_chars)


def loaded(name: str) -> bool:
    """Whether the encoding `name` is loaded in this process (counting with it will not load a file)."""
    return name in _LOADED


_LOADED: set[str] = set()


@functools.cache
def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name` ("o200k_base" or "cl100k_base"), built from the vendored file once per
    process. Raises EncodingDataError if the file is missing or altered, ValueError for another name."""
    if name not in SHA256:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(SHA256)}")
    constructor = openai_public.ENCODING_CONSTRUCTORS[name]
    parameters = _with_vendored_files(constructor)()
    built = tiktoken.Encoding(
        name=parameters["name"],
        pat_str=parameters["pat_str"],
        mergeable_ranks=parameters["mergeable_ranks"],
        special_tokens=parameters["special_tokens"],
        explicit_n_vocab=parameters.get("explicit_n_vocab"),
    )
    _LOADED.add(name)
    return built


def _with_vendored_files(constructor: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """A copy of one of tiktoken_ext's constructors that calls `_load_vendored` instead of downloading
    (the module itself is left alone, so nothing else in the process is affected)."""
    namespace = {**vars(openai_public), "load_tiktoken_bpe": _load_vendored}
    return types.FunctionType(constructor.__code__, namespace, constructor.__name__)


def _load_vendored(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """tiktoken's load_tiktoken_bpe(url, expected_hash), reading data/<file name>.gz instead of the URL."""
    name = url.rsplit("/", 1)[-1].removesuffix(".tiktoken")
    path = DATA / f"{name}.tiktoken.gz"
    if name not in SHA256:
        raise EncodingDataError(f"no vendored copy of {url}")
    try:
        contents = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise EncodingDataError(f"cannot read the vendored encoding file {path}: {error}") from error
    digest = hashlib.sha256(contents).hexdigest()
    if digest != SHA256[name] or (expected_hash is not None and digest != expected_hash):
        raise EncodingDataError(f"the vendored encoding file {path} is not the official one: its SHA-256 is {digest}")
    return _parse_ranks(contents, path)


def _parse_ranks(contents: bytes, path: Path) -> dict[bytes, int]:
    """Lines of `base64(token) rank`, as tiktoken's load_tiktoken_bpe reads them."""
    ranks: dict[bytes, int] = {}
    for line in contents.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as error:  # binascii.Error is a ValueError
            raise EncodingDataError(f"bad line {line[:80]!r} in {path}") from error
    return ranks
