"""YAML documents that remember where each value came from, and validation errors that say so.

Every configuration file (gateway.yaml, policy files) is read here: parsed with PyYAML into plain dicts
that know the line of each key, then validated by pydantic into frozen dataclasses. Any error is reported
as `file:line: field: message`, and all errors of a file are reported at once.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

T = TypeVar("T")
UNKNOWN_KEY = {"extra_forbidden", "unexpected_keyword_argument"}


class LineDict(dict[str, Any]):
    """A mapping from a YAML file; `lines[key]` is the 1-based line of that key, `line` the mapping's own."""

    line: int = 0
    lines: dict[str, int]


class LineList(list[Any]):
    """A sequence from a YAML file; `lines[i]` is the 1-based line of item i, `line` the sequence's own."""

    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LineDict:  # type: ignore[override]
        result = LineDict()
        result.line = node.start_mark.line + 1
        result.lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in result:
                raise ConfigError([Problem(_name(node), key_node.start_mark.line + 1, str(key), "duplicate key")])
            result[key] = self.construct_object(value_node, deep=True)
            result.lines[str(key)] = key_node.start_mark.line + 1
        return result

    def construct_sequence(self, node: yaml.SequenceNode, deep: bool = False) -> LineList:  # type: ignore[override]
        result = LineList(self.construct_object(child, deep=True) for child in node.value)
        result.line = node.start_mark.line + 1
        result.lines = [child.start_mark.line + 1 for child in node.value]
        return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.construct_sequence)


def _name(node: yaml.Node) -> str:
    return node.start_mark.name


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field or '(document)'}: {self.message}"


class ConfigError(Exception):
    """One or more problems in a configuration file; `str()` lists them one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = list(problems)


def read(path: Path) -> Any:
    """Parse a YAML file into LineDicts and LineLists, or raise ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 0, "", f"cannot read: {exc}")]) from None
    try:
        loader = _Loader(text)
        loader.name = str(path)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([Problem(str(path), line, "", f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(str(path), 0, "", f"invalid YAML: {exc}")]) from None


def validate(model: type[T], data: Any, path: Path) -> T:
    """Validate parsed YAML into `model` (a frozen dataclass forbidding extra keys)."""
    try:
        return pydantic.TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        locs = [tuple(err["loc"]) for err in errors]
        # an error on a container that only follows from errors inside it (e.g. "at least 1 item after validation")
        inner = [
            err
            for err in errors
            if not any(len(o) > len(err["loc"]) and o[: len(err["loc"])] == tuple(err["loc"]) for o in locs)
        ]
        raise ConfigError([_problem(path, data, err) for err in inner]) from None


def _problem(path: Path, data: Any, err: Any) -> Problem:
    loc = [part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    line, node = getattr(data, "line", 0), data
    fields: list[Any] = []
    for part in loc:
        if isinstance(node, LineDict) and part not in node and node.get("kind") == part:
            continue  # the tag of a discriminated union (a rule's `kind`) is not a field
        fields.append(part)
        if isinstance(node, LineDict) and isinstance(part, str):
            line = node.lines.get(part, line)
        elif isinstance(node, LineList) and isinstance(part, int) and part < len(node):
            line = node.lines[part]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    message = "unknown key" if err["type"] in UNKNOWN_KEY else err["msg"]
    return Problem(str(path), line, _field(fields), message)


def _field(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
