"""Loading policy directories: the shipped examples, and every kind of bad file named by file, line and field."""

import shutil
import textwrap
import time
from pathlib import Path

import pytest

from gateway.policy import loader
from gateway.policy.loader import PolicyStore
from gateway.yamlconf import ConfigError

SHIPPED = Path(__file__).parents[3] / "policies"
GOOD = """\
policies:
  - name: base
    rules:
      - {name: no-secrets, kind: secrets}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loader.load(directory)
    return [str(p) for p in caught.value.problems]


def test_every_shipped_example_loads() -> None:
    policies = loader.load(SHIPPED)
    names = {item.policy.name for item in policies.loaded}
    assert {"baseline", "finance-strict", "healthcare-strict", "developer", "developer-candidates", "quotas"} <= names
    assert len(policies.files) == 4  # test files and the README are not policy files


def test_revision_depends_on_content_not_on_load_order(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    first = loader.load(tmp_path).revision
    assert loader.load(tmp_path).revision == first
    write(tmp_path, "a.yaml", GOOD.replace("secrets}", "secrets, action: warn}"))
    assert loader.load(tmp_path).revision != first


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "policies:\n  - name: x\n    rules: [\n")
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def test_unknown_key_names_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.yaml",
        "policies:\n  - name: base\n    rules:\n      - name: s\n        kind: secrets\n        colour: red\n",
    )
    assert problems(tmp_path) == [f"{path}:6: policies[0].rules[0].colour: unknown key"]


def test_unknown_rule_kind_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "policies:\n  - name: base\n    rules:\n      - name: s\n        kind: vibes\n")
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{path}:4: policies[0].rules[0]") and "vibes" in problem


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    text = "policies:\n  - name: base\n    rules:\n      - name: t\n        kind: max_tokens\n        limit: lots\n"
    path = write(tmp_path, "p.yaml", text)
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{path}:6: policies[0].rules[0].limit:")


def test_invalid_regular_expression_names_its_line(tmp_path: Path) -> None:
    text = "policies:\n  - name: base\n    rules:\n      - name: r\n        kind: regex\n        patterns:\n"
    text += "          - 'ok'\n          - '(unclosed'\n"
    path = write(tmp_path, "p.yaml", text)
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{path}:8: policies[0].rules[0].patterns[1]:")


def test_catastrophic_regular_expression_is_refused_quickly(tmp_path: Path) -> None:
    text = "policies:\n  - name: base\n    rules:\n      - name: r\n        kind: regex\n        patterns: ['(a+)+$']\n"
    path = write(tmp_path, "p.yaml", text)
    started = time.perf_counter()
    [problem] = problems(tmp_path)
    assert time.perf_counter() - started < 1.0
    assert problem.startswith(f"{path}:6: policies[0].rules[0].patterns[0]:") and "backtrack" in problem


def test_duplicate_policy_names_across_files_name_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", GOOD)
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{second}:2: name:") and f"{first}:2" in problem


def test_duplicate_rule_names_are_an_error(tmp_path: Path) -> None:
    text = GOOD + "      - {name: no-secrets, kind: injection}\n"
    write(tmp_path, "p.yaml", text)
    [problem] = problems(tmp_path)
    assert "duplicate rule names: no-secrets" in problem


def test_redact_is_refused_where_it_means_nothing(tmp_path: Path) -> None:
    write(
        tmp_path, "p.yaml", "policies:\n  - name: b\n    rules:\n      - {name: i, kind: injection, action: redact}\n"
    )
    [problem] = problems(tmp_path)
    assert ":4: policies[0].rules[0]" in problem and "cannot redact" in problem


def test_unknown_secret_kind_lists_the_known_ones(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        "policies:\n  - name: b\n    rules:\n      - {name: s, kind: secrets, kinds: [aws_access_key_id, passwords]}\n",
    )
    [problem] = problems(tmp_path)
    assert "passwords" in problem and "openai_api_key" in problem


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "policies:\n  - name: a\n    rules: []\n    extra: 1\n")
    write(tmp_path, "b.yaml", "policies:\n  - name: b\n    mode: loud\n    rules: []\n")
    assert len(problems(tmp_path)) == 2


def test_a_broken_reload_keeps_the_last_good_revision(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", GOOD)
    store = PolicyStore(tmp_path)
    good = store.current
    write(tmp_path, "p.yaml", GOOD + "      - {name: r, kind: regex, patterns: ['(x*)*']}\n")
    assert store.reload() is False
    assert store.current is good
    assert store.reload_failures == 1 and "p.yaml:5" in (store.last_error or "")
    write(tmp_path, "p.yaml", GOOD.replace("secrets}", "secrets, action: warn}"))
    assert store.reload() is True
    assert store.current.revision != good.revision and store.last_error is None


def test_test_files_are_not_policies(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "examples.test.yaml", tmp_path / "examples.test.yaml")
    write(tmp_path, "p.yaml", GOOD)
    assert [Path(f).name for f in loader.load(tmp_path).files] == ["p.yaml"]
