"""`gateway budgets list|reset`: spend against budgets, for admins, read from Redis (where replicas share it).

list    every budget counter in Redis: policy/rule, period, scope, limit (from the policies in force),
        spent, reserved by requests in flight, remaining
reset   forget what a budget counter has spent (all periods, or one), e.g. after a refund or a mistake

Without `limits.redis_url` the counters live inside the gateway process; ask it with GET /v1/gateway/usage.
"""

import argparse
import asyncio
import sys
from typing import Any
from urllib.parse import unquote

from gateway import codec
from gateway import settings as settings_module
from gateway.limits.alerts import usd
from gateway.limits.redis_backend import BackendDown, RedisBackend
from gateway.policy import loader
from gateway.policy.schema import BudgetRule


def add_commands(commands: Any) -> None:
    budgets = commands.add_parser("budgets", help="spend against budgets").add_subparsers(dest="budgets", required=True)
    listing = budgets.add_parser("list", help="budget counters: spent, reserved, remaining")
    listing.add_argument("--config", required=True)
    listing.add_argument("--period", help="only this period (e.g. 2026-11, 2026-W48, 2026-11-24)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_list)
    reset = budgets.add_parser("reset", help="forget a budget counter's spend")
    reset.add_argument("--config", required=True)
    reset.add_argument("--policy", required=True)
    reset.add_argument("--rule", required=True)
    reset.add_argument("--scope", help="e.g. team=finance (default: every scope)")
    reset.add_argument("--period", help="default: every period")
    reset.set_defaults(run=cmd_reset)


def _backend(path: str) -> tuple[RedisBackend, str, dict[tuple[str, str], BudgetRule]] | None:
    settings = settings_module.load(path)
    if settings.limits.redis_url is None:
        print(
            "gateway budgets: no limits.redis_url in the configuration: budgets are counted inside the gateway "
            "process; ask it with GET /v1/gateway/usage",
            file=sys.stderr,
        )
        return None
    rules: dict[tuple[str, str], BudgetRule] = {}
    if settings.policy_dir is not None:
        for item in loader.load(settings.policy_dir).loaded:
            for rule in item.policy.rules:
                if isinstance(rule, BudgetRule):
                    rules[(item.policy.name, rule.name)] = rule
    backend = RedisBackend(settings.limits.redis_url, timeout=2.0)
    return backend, "{" + settings.limits.key_prefix + "}", rules


def parse_key(key: str, tag: str) -> dict[str, str] | None:
    """{gw}:budget:<policy>/<rule>:<period>:<scope> → its parts (None for a key of another kind)."""
    if not key.startswith(tag + ":budget:") or key.endswith(":aux"):
        return None
    name, period, scope = key[len(tag) + 8 :].split(":", 2)
    policy, _, rule = name.partition("/")
    return {"policy": policy, "rule": rule, "period": period, "scope": unquote(scope)}


async def _list(args: argparse.Namespace) -> int:
    found = _backend(args.config)
    if found is None:
        return 2
    backend, tag, rules = found
    rows = []
    try:
        for key, fields in await backend.scan(f"{tag}:budget:*"):
            parts = parse_key(key, tag)
            if parts is None or (args.period and parts["period"] != args.period):
                continue
            rule = rules.get((parts["policy"], parts["rule"]))
            limit = int(rule.usd * 1_000_000) if rule else None
            spent, reserved = fields.get("spent", 0), fields.get("reserved", 0)
            rows.append(
                {
                    **parts,
                    "limit_usd": usd(limit) if limit is not None else None,
                    "spent_usd": usd(spent),
                    "reserved_usd": usd(reserved),
                    "remaining_usd": usd(max(0, limit - spent - reserved)) if limit is not None else None,
                }
            )
    except BackendDown as exc:
        print(f"gateway budgets: Redis is unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
    if args.json:
        print(codec.dumps(rows).decode())
        return 0
    print(f"{'POLICY/RULE':32} {'PERIOD':11} {'SCOPE':28} {'LIMIT':>12} {'SPENT':>12} {'RESERVED':>10} {'LEFT':>12}")
    for row in rows:
        name = f"{row['policy']}/{row['rule']}"
        cap, left = row["limit_usd"] or "(no rule)", row["remaining_usd"] or "-"
        print(
            f"{name:32} {row['period']:11} {row['scope']:28} {cap:>12} {row['spent_usd']:>12} "
            f"{row['reserved_usd']:>10} {left:>12}"
        )
    return 0


async def _reset(args: argparse.Namespace) -> int:
    found = _backend(args.config)
    if found is None:
        return 2
    backend, tag, _ = found
    removed = 0
    try:
        for key, _fields in await backend.scan(f"{tag}:budget:*"):
            parts = parse_key(key, tag)
            if parts is None or (parts["policy"], parts["rule"]) != (args.policy, args.rule):
                continue
            if (args.scope and parts["scope"] != args.scope) or (args.period and parts["period"] != args.period):
                continue
            await backend.client.delete(key, key + ":aux")
            removed += 1
    except BackendDown as exc:
        print(f"gateway budgets: Redis is unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        await backend.close()
    print(f"reset {removed} budget counter(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    return asyncio.run(_list(args))


def cmd_reset(args: argparse.Namespace) -> int:
    return asyncio.run(_reset(args))
