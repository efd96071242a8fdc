"""`gateway policy check|test|explain|schema` as a security team runs them in CI, and `serve` on a broken directory."""

import json
import shutil
from pathlib import Path

import jsonschema
import yaml

from gateway import yamlconf
from tests.conftest import create_key
from tests.servers import gateway_command

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies"


def copy_shipped(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(SHIPPED, target)
    return target


def test_check_accepts_the_shipped_policies() -> None:
    result = gateway_command("policy", "check", str(SHIPPED))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 6 policies in 4 files, revision ")


def test_check_names_file_line_and_field_of_every_problem(tmp_path: Path) -> None:
    directory = copy_shipped(tmp_path)
    (directory / "broken.yaml").write_text(
        "policies:\n  - name: x\n    rules:\n      - {name: r, kind: regex, patterns: ['(']}\n"
    )
    (directory / "worse.yaml").write_text("policies:\n  - name: baseline\n    rules: []\n")
    result = gateway_command("policy", "check", str(directory))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "gateway policy check: 2 problem(s)"
    assert lines[1].startswith(f"{directory}/broken.yaml:4: policies[0].rules[0].patterns[0]: ")
    assert lines[2].startswith(f"{directory}/worse.yaml:2: name: duplicate policy name 'baseline'")


def test_the_shipped_test_cases_pass() -> None:
    result = gateway_command("policy", "test", str(SHIPPED))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(")") and " 0 failed" in result.stdout


def test_a_failing_case_fails_the_run_and_says_what_it_got(tmp_path: Path) -> None:
    directory = copy_shipped(tmp_path)
    case = {
        "name": "wrongly expects a pass",
        "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}]},
        "expect": {"decision": "allow"},
    }
    (directory / "extra.test.yaml").write_text(yaml.safe_dump({"tests": [case]}))
    result = gateway_command("policy", "test", str(directory))
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "expected allow, got block by baseline/no-credentials" in result.stdout


def test_a_directory_without_cases_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("policies: []\n")
    result = gateway_command("policy", "test", str(tmp_path))
    assert result.returncode == 1 and "no test cases" in result.stderr


def test_explain_a_key_shows_its_layers_and_effective_rules(tmp_path: Path) -> None:
    directory = copy_shipped(tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "models:\n  - {name: gpt-4o, provider: openai, base_url: http://127.0.0.1:9/v1}\npolicies:\n  dir: policies\n"
    )
    key = create_key(config, "--team", "finance", "--tags", "dev")
    key_id = key.removeprefix("gk-").split(".")[0]
    result = gateway_command(
        "policy", "explain", "--config", str(config), "--key", key_id, "--model", "gpt-4o", "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    applying = [layer["policy"] for layer in report["layers"] if layer["applies"]]
    assert applying == ["baseline", "finance-strict", "developer", "developer-candidates"]
    rules = {rule["rule"]: rule for rule in report["rules"]}
    assert rules["finance-strict/approved-models"]["allow"] == ["gpt-4o*", "gpt-4.1*", "azure-*"]
    assert rules["developer-candidates/injection-strict"]["action"] == "shadow"
    text = gateway_command("policy", "explain", "--dir", str(directory), "--team", "healthcare", "--model", "gpt-4o")
    assert "healthcare-strict" in text.stdout and "answer-length" in text.stdout


def test_the_published_schema_is_fresh_and_accepts_every_shipped_file() -> None:
    result = gateway_command("policy", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert json.loads((SHIPPED / "policy.schema.json").read_text()) == schema, (
        "run: gateway policy schema > policies/policy.schema.json"
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in SHIPPED.glob("*.yaml"):
        if not path.name.endswith(".test.yaml"):
            jsonschema.validate(json.loads(json.dumps(yamlconf.read(path))), schema)


def test_serve_refuses_to_start_on_a_broken_policy_directory(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("policies:\n  - name: p\n    rules:\n      - {name: t, kind: nope}\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "models:\n  - {name: m, provider: openai, base_url: http://127.0.0.1:9/v1}\npolicies:\n  dir: policies\n"
    )
    result = gateway_command("serve", "--config", str(config), "--port", "9")
    assert result.returncode == 2
    assert f"{tmp_path}/policies/p.yaml:4: policies[0].rules[0]" in result.stderr
