"""Policy test cases (`*.test.yaml` next to the policies), run by `gateway policy test DIR`.

    tests:
      - name: an AWS key in a prompt is blocked
        principal: {team: finance, key: 0123abcd4567, tags: [dev]}   # all optional (team "default")
        route: chat/completions                                      # the default
        request: {model: gpt-4o, messages: [{role: user, content: "..."}]}
        headers: {x-purpose: support}                                # optional
        output: "an answer to check against the output rules"        # optional
        expect: {decision: block, rule: baseline/no-secrets}         # decision: allow|shadow|warn|redact|block

A case runs the gateway's own engine (gateway.policy.engine, guardrails.stream) on the request and, when
given, on an answer of the route's shape; the decision is the strictest action of the rules that fired.
"""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway import codec, yamlconf
from gateway.errors import PolicyViolation
from gateway.guardrails.stream import scan_json
from gateway.policy.compiled import PolicySet
from gateway.policy.engine import Decision, Recorder, check_input, strictest_action
from gateway.policy.loader import TEST_SUFFIXES
from gateway.policy.schema import FORBID, Route

Expected = Literal["allow", "shadow", "warn", "redact", "block"]


@dataclass(frozen=True)
class Principal:
    __pydantic_config__ = FORBID
    team: str = "default"
    key: str = "test-key"
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Expect:
    __pydantic_config__ = FORBID
    decision: Expected
    rule: str | None = None


@dataclass(frozen=True)
class Case:
    __pydantic_config__ = FORBID
    name: str
    request: dict[str, Any]
    expect: Expect
    principal: Principal = field(default_factory=Principal)
    route: Route = "chat/completions"
    headers: dict[str, str] = field(default_factory=dict)
    output: str | None = None


@dataclass(frozen=True)
class TestFile:
    __pydantic_config__ = FORBID
    tests: tuple[Case, ...]


@dataclass(frozen=True)
class Outcome:
    file: str
    case: Case
    decision: str
    rule: str | None
    decisions: list[Decision]

    @property
    def passed(self) -> bool:
        expect = self.case.expect
        return self.decision == expect.decision and (expect.rule is None or expect.rule == self.rule)


def test_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name.endswith(TEST_SUFFIXES))


def load_cases(path: Path) -> list[Case]:
    data = yamlconf.read(path)
    if not isinstance(data, yamlconf.LineDict):
        raise yamlconf.ConfigError([yamlconf.Problem(str(path), 1, "", "expected a mapping with a `tests` list")])
    return list(yamlconf.validate(TestFile, data, path).tests)


def run_case(policies: PolicySet, file: str, case: Case) -> Outcome:
    p = case.principal
    body = copy.deepcopy(case.request)
    effective = policies.resolve(p.team, p.key, tuple(p.tags), str(body.get("model", "")), case.route)
    decisions: list[Decision] = []
    headers = {name.lower(): value for name, value in case.headers.items()}
    try:
        check_input(effective, case.route, body, headers, "openai", decisions)
        if case.output is not None and effective.output_text:
            recorder = Recorder(effective.revision, decisions)
            answer = codec.dumps(answer_body(case.route, case.output))
            scan_json(case.route, answer, effective.output_text, recorder.finding("output"))
    except PolicyViolation:
        pass
    action = strictest_action(decisions) or "allow"
    deciding = next((d.name for d in decisions if d.action == action), None)
    return Outcome(file, case, action, deciding, decisions)


def answer_body(route: str, text: str) -> Mapping[str, Any]:
    """A minimal answer of the route's shape carrying `text`."""
    if route == "completions":
        return {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    if route == "responses":
        part = {"type": "output_text", "text": text, "annotations": []}
        return {"object": "response", "output": [{"type": "message", "role": "assistant", "content": [part]}]}
    message = {"role": "assistant", "content": text}
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
