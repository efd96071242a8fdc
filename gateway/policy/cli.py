"""`gateway policy check|test|explain|schema`: policies checked in CI with the gateway's own compiler.

check DIR                    load every policy file; every problem with file, line and field; exit 1 if any
test DIR                     run the `*.test.yaml` cases under DIR against the policies in DIR; exit 1 on a failure
explain --key ID | --team T  which policies apply to a key or team for a model and route, layer by layer,
        --model M [--route R]  and the effective rules
schema                       the JSON Schema of policy files (policies/policy.schema.json)
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import pydantic

from gateway import codec
from gateway import settings as settings_module
from gateway.auth.keys import KeyStore
from gateway.policy import loader, testing
from gateway.policy.compiled import Effective, PolicySet, RuleRef
from gateway.policy.schema import PolicyFile
from gateway.yamlconf import ConfigError


def add_commands(commands: Any) -> None:
    policy = commands.add_parser("policy", help="check, test and explain policies").add_subparsers(
        dest="policy", required=True
    )
    check = policy.add_parser("check", help="validate a policy directory")
    check.add_argument("dir", type=Path)
    check.set_defaults(run=cmd_check)
    test = policy.add_parser("test", help="run the *.test.yaml cases of a policy directory")
    test.add_argument("dir", type=Path)
    test.add_argument("-v", "--verbose", action="store_true", help="print every case, not only failures")
    test.set_defaults(run=cmd_test)
    explain = policy.add_parser("explain", help="which policies apply to a key or a team, and what they enforce")
    explain.add_argument("--dir", type=Path, help="policy directory (default: policies.dir of --config)")
    explain.add_argument("--config", help="gateway.yaml (needed for --key, or for its policy directory)")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--key", help="a key id (from `gateway keys list`)")
    who.add_argument("--team")
    explain.add_argument("--tags", default="", help="comma-separated key tags (with --team)")
    explain.add_argument("--model", required=True)
    explain.add_argument("--route", default="chat/completions")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(run=cmd_explain)
    schema = policy.add_parser("schema", help="print the JSON Schema of policy files")
    schema.set_defaults(run=cmd_schema)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policies = loader.load(args.dir)
    except ConfigError as exc:
        print(f"gateway policy check: {len(exc.problems)} problem(s)\n{exc}", file=sys.stderr)
        return 1
    print(f"ok: {len(policies.loaded)} policies in {len(policies.files)} files, revision {policies.revision}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    try:
        policies = loader.load(args.dir)
        cases = [(path, case) for path in testing.test_files(args.dir) for case in testing.load_cases(path)]
    except ConfigError as exc:
        print(f"gateway policy test: {len(exc.problems)} problem(s)\n{exc}", file=sys.stderr)
        return 1
    if not cases:
        print(f"gateway policy test: no test cases (*.test.yaml) under {args.dir}", file=sys.stderr)
        return 1
    failures = 0
    for path, case in cases:
        outcome = testing.run_case(policies, str(path), case)
        failures += not outcome.passed
        if args.verbose or not outcome.passed:
            mark = "PASS" if outcome.passed else "FAIL"
            got = f"{outcome.decision}" + (f" by {outcome.rule}" if outcome.rule else "")
            want = case.expect.decision + (f" by {case.expect.rule}" if case.expect.rule else "")
            print(f"{mark} {path}: {case.name}: expected {want}, got {got}")
    print(f"{len(cases) - failures} passed, {failures} failed (revision {policies.revision})")
    return 1 if failures else 0


def cmd_explain(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config) if args.config else None
    directory = args.dir or (settings.policy_dir if settings else None)
    if directory is None:
        print("gateway policy explain: give --dir, or --config with a policies.dir", file=sys.stderr)
        return 2
    if args.key:
        if settings is None:
            print("gateway policy explain: --key needs --config (to find the keys file)", file=sys.stderr)
            return 2
        record = next((r for r in KeyStore(settings.keys_path).records() if r.id == args.key), None)
        if record is None:
            print(f"gateway policy explain: no key with id {args.key}", file=sys.stderr)
            return 1
        team, key_id, tags = record.team, record.id, record.tags
    else:
        team, key_id, tags = args.team, "", tuple(t.strip() for t in args.tags.split(",") if t.strip())
    policies = loader.load(directory)
    report = explain(policies, team, key_id, tags, args.model, args.route)
    print(codec.dumps_pretty(report).decode() if args.json else render(report))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(codec.dumps_pretty(json_schema()).decode())
    return 0


def json_schema() -> dict[str, Any]:
    schema = pydantic.TypeAdapter(PolicyFile).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Gateway policy file", **schema}


def explain(
    policies: PolicySet, team: str, key_id: str, tags: tuple[str, ...], model: str, route: str
) -> dict[str, Any]:
    matching = policies.matching(team, key_id, tags, model, route)
    layers = [
        {
            "level": item.policy.level,
            "policy": item.policy.name,
            "mode": item.policy.mode,
            "at": f"{item.file}:{item.line}",
            "applies": item in matching,
        }
        for item in policies.loaded
    ]
    effective = policies.resolve(team, key_id, tags, model, route)
    request = {"team": team, "key": key_id or None, "tags": list(tags), "model": model, "route": route}
    return {"revision": policies.revision, "request": request, "layers": layers, "rules": rules(effective)}


def rules(effective: Effective) -> list[dict[str, Any]]:
    request_rules: list[tuple[RuleRef, Any]] = [
        *effective.models,
        *effective.metadata,
        *effective.max_tokens,
        *effective.input_tokens,
    ]
    out: list[dict[str, Any]] = []
    for ref, rule in request_rules:
        params = {k: v for k, v in vars(rule).items() if k not in ("name", "kind", "action", "message")}
        out.append({"rule": f"{ref.policy}/{ref.rule}", "kind": ref.kind, "action": ref.action, **params})
    sides: dict[tuple[str, str], list[str]] = {}
    for side, group in (("input", effective.input_text), ("output", effective.output_text)):
        for text_rule in group:
            key = (f"{text_rule.policy}/{text_rule.rule}", text_rule.kind)
            sides.setdefault(key, []).append(side)
            if len(sides[key]) == 1:
                out.append({"rule": key[0], "kind": key[1], "action": text_rule.action, "where": sides[key]})
    return out


def render(report: dict[str, Any]) -> str:
    request = report["request"]
    lines = [
        f"revision {report['revision']}",
        "request: " + " ".join(f"{k}={v if v not in (None, []) else '-'}" for k, v in request.items()),
        "layers (global → team → key):",
    ]
    for layer in report["layers"]:
        mark = "applies" if layer["applies"] else "-"
        shadow = " (shadow mode)" if layer["mode"] == "shadow" else ""
        lines.append(f"  {layer['level']:<7}{layer['policy']:<28}{mark:<9}{layer['at']}{shadow}")
    lines.append("effective rules (all apply; the strictest action decides):")
    for rule in report["rules"] or [{"rule": "(none)", "kind": "", "action": ""}]:
        extra = {k: v for k, v in rule.items() if k not in ("rule", "kind", "action")}
        detail = " ".join(f"{k}={_short(v)}" for k, v in extra.items())
        lines.append(f"  {rule['rule']:<40}{rule['kind']:<18}{rule['action']:<8}{detail}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)
