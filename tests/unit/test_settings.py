"""gateway.yaml: every problem is reported with file, line and field; good files become frozen settings."""

import dataclasses
import logging
from pathlib import Path

import pytest

from gateway import settings
from gateway.yamlconf import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


GOOD = """\
listen: {host: 0.0.0.0, port: 9000}
models:
  - name: gpt-4o
    provider: openai
    base_url: https://api.openai.com/v1/
    api_key: env:OPENAI_API_KEY
  - name: local
    provider: vllm
    base_url: http://127.0.0.1:8000/v1
    model: meta-llama/Llama-3.1-8B-Instruct
    timeout: {connect: 1, read: 30}
"""


def test_a_good_file_loads_into_frozen_settings(tmp_path: Path) -> None:
    loaded = settings.load(write(tmp_path, GOOD))
    assert loaded.listen.port == 9000
    assert loaded.models[0].base_url == "https://api.openai.com/v1"
    assert loaded.model("local").deployments[0].upstream_model == "meta-llama/Llama-3.1-8B-Instruct"  # type: ignore[union-attr]
    assert loaded.keys_path == tmp_path / "gateway.keys.json"
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.listen.port = 1  # type: ignore[misc]


def test_every_problem_names_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        GOOD.replace("    provider: vllm", "    provider: vlm\n    colour: red").replace("port: 9000", "port: nine"),
    )
    with pytest.raises(ConfigError) as caught:
        settings.load(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:1: listen.port: Input should be a valid integer, unable to parse string as an integer" in lines
    assert any(line.startswith(f"{path}:8: models[1].provider:") for line in lines)
    assert f"{path}:9: models[1].colour: unknown key" in lines


def test_unknown_top_level_keys_and_missing_fields_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "modles: []\n")
    with pytest.raises(ConfigError) as caught:
        settings.load(path)
    assert f"{path}:1: modles: unknown key" in str(caught.value)
    assert "models: Field required" in str(caught.value)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: \(document\): invalid YAML"):
        settings.load(path)


def test_duplicate_keys_and_model_names_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate key"):
        settings.load(write(tmp_path, "listen: {}\nlisten: {}\nmodels: []\n"))
    twice = GOOD.replace("name: local", "name: gpt-4o")
    with pytest.raises(ConfigError, match="duplicate model names: gpt-4o"):
        settings.load(write(tmp_path, twice))


def test_base_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":5: models\[0\].base_url: Value error, must start with http"):
        settings.load(write(tmp_path, GOOD.replace("https://api.openai.com/v1/", "api.openai.com")))


def test_a_literal_secret_is_allowed_but_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = settings.load(write(tmp_path, GOOD.replace("env:OPENAI_API_KEY", "sk-literal")))
    assert loaded.models[0].api_key == "sk-literal"
    assert ":6: models[0].api_key is a literal secret" in caplog.text
    assert "sk-literal" not in caplog.text


def test_env_secrets_resolve_or_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_KEY", "sk-x")
    monkeypatch.delenv("Y_KEY", raising=False)
    assert settings.resolve_secret("env:X_KEY", "here") == "sk-x"
    assert settings.resolve_secret(None, "here") is None
    with pytest.raises(settings.SecretError, match="here: environment variable Y_KEY is not set"):
        settings.resolve_secret("env:Y_KEY", "here")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "7000")
    monkeypatch.setenv("GATEWAY_KEYS_FILE", str(tmp_path / "k.json"))
    loaded = settings.load(write(tmp_path, GOOD))
    assert loaded.listen.port == 7000
    assert loaded.keys_path == tmp_path / "k.json"


def test_the_shipped_example_config_loads() -> None:
    example = Path(__file__).parents[2] / "gateway.example.yaml"
    loaded = settings.load(example)
    assert {m.name for m in loaded.models} >= {"gpt-4o-mini", "gpt-4o"}
    assert all(d.api_key == "env:OPENAI_API_KEY" for m in loaded.models for d in m.deployments)
    assert loaded.policy_dir is not None and (loaded.policy_dir / "baseline.yaml").exists()


def test_a_model_takes_either_the_short_form_or_deployments(tmp_path: Path) -> None:
    both = GOOD.replace("    model: meta-llama/Llama-3.1-8B-Instruct\n", "    deployments: []\n")
    assert settings.load(write(tmp_path, both)).models[1].deployments[0].provider == "vllm"
    mixed = GOOD.replace(
        "    model: meta-llama/Llama-3.1-8B-Instruct\n",
        "    deployments: [{provider: openai, base_url: 'http://x/v1'}]\n",
    )
    with pytest.raises(ConfigError, match=r":7: models\[1\]: Value error, give either provider/base_url"):
        settings.load(write(tmp_path, mixed))
    unknown_fallback = GOOD + "    fallbacks: [nope]\n"
    with pytest.raises(ConfigError, match="fallback 'nope' is not another configured model"):
        settings.load(write(tmp_path, unknown_fallback))


def test_the_audit_trail_is_on_unless_the_file_turns_it_off(tmp_path: Path) -> None:
    models = "models:\n  - {name: m, provider: openai, base_url: http://127.0.0.1:9/v1}\n"
    default = settings.load(write(tmp_path, models))
    assert default.audit is not None and default.audit_url == f"chdb://{(tmp_path / 'audit-db').resolve()}"
    assert settings.load(write(tmp_path, models + "audit: false\n")).audit is None
    server = settings.load(write(tmp_path, models + "audit: {clickhouse_url: 'http://ch:8123'}\n"))
    assert server.audit is not None and server.audit_url == "http://ch:8123"
