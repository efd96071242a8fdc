"""The `gateway` command: serve · keys create|list|revoke · policy check|test|explain|schema ·
audit ship|verify|tail|query · report compliance|verify · secrets keygen|encrypt|decrypt-check.

Exit codes: 0 done, 1 the thing asked for does not exist, 2 bad usage or a broken configuration (the
message names file, line and field).
"""

import argparse
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime

from gateway import codec, secrets
from gateway import settings as settings_module
from gateway.audit import cli as audit_cli
from gateway.audit import keyring as audit_keyring
from gateway.auth import keys as keys_module
from gateway.limits import cli as limits_cli
from gateway.policy import cli as policy_cli
from gateway.policy import loader as policy_loader
from gateway.reports import cli as reports_cli
from gateway.settings import SecretError, Settings
from gateway.yamlconf import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ConfigError, SecretError) as exc:
        print(f"gateway: configuration error\n{exc}", file=sys.stderr)
        return 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gateway", description="AI governance gateway")
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway.yaml (not needed with --demo)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="start with the mock upstream and a demo key")
    serve.set_defaults(run=cmd_serve)

    keys = commands.add_parser("keys", help="manage virtual keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key; prints only the key, once")
    create.add_argument("--config", required=True)
    create.add_argument("--team", required=True)
    create.add_argument("--name")
    create.add_argument("--models", help="comma-separated model names this key may use (default: all)")
    create.add_argument("--expires", help="date (YYYY-MM-DD, UTC) or ISO datetime")
    create.add_argument("--tags", help="comma-separated tags, which policies can match (match.key_tags)")
    create.set_defaults(run=cmd_keys_create)
    listing = keys.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--config", required=True)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("--config", required=True)
    revoke.add_argument("key_id")
    revoke.set_defaults(run=cmd_keys_revoke)
    policy_cli.add_commands(commands)
    audit_cli.add_commands(commands)
    limits_cli.add_commands(commands)
    reports_cli.add_commands(commands)
    secrets.add_commands(commands)
    return top


def _with_listen(settings: Settings, host: str | None, port: int | None) -> Settings:
    listen = replace(settings.listen, host=host or settings.listen.host, port=port or settings.listen.port)
    return replace(settings, listen=listen)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import demo, server

    if args.demo:
        return demo.run(args.host or "127.0.0.1", args.port or 8080)
    if not args.config:
        print("gateway serve: --config is required (or use --demo)", file=sys.stderr)
        return 2
    settings = _with_listen(settings_module.load(args.config), args.host, args.port)
    for model in settings.models:
        for deployment in model.deployments:
            where = f"{settings.source}: models[{model.name}] deployment {deployment.label}"
            secrets.resolve(deployment.api_key, where)
    if settings.pii.conversation_header:
        secrets.load_master_key()  # conversation pseudonyms are stored encrypted under it
    if settings.audit is not None and settings.audit.bodies:
        audit_keyring.master_key()  # the team keys of the stored audit bodies are wrapped under it
    if settings.policy_dir is not None:
        policy_loader.load(settings.policy_dir)  # a broken policy directory stops the start, naming file and line
        if args.workers > 1 and settings.limits.redis_url is None:
            print(
                f"gateway serve: warning: {args.workers} workers without limits.redis_url: each worker keeps its own "
                "rate-limit and budget counts (a limit of N admits up to N per worker); set limits.redis_url "
                "to share them",
                file=sys.stderr,
            )
    server.serve(settings, workers=args.workers)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    unknown = [m for m in models or [] if settings.model(m) is None]
    if unknown:
        print(f"gateway keys create: unknown models: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
        key = keys_module.create(settings.keys_path, args.team, args.name, models, args.expires, tags)
    except ValueError as exc:
        print(f"gateway keys create: --expires: {exc}", file=sys.stderr)
        return 2
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    now = datetime.now(UTC)
    records = keys_module.KeyStore(settings.keys_path).records()
    if args.json:
        rows = [{**asdict(r), "state": r.state(now)} for r in records]
        print(codec.dumps_pretty([{k: v for k, v in row.items() if k != "hash"} for row in rows]).decode())
        return 0
    print(f"{'ID':<14}{'TEAM':<16}{'NAME':<24}{'STATE':<9}{'MODELS':<24}{'TAGS':<16}EXPIRES")
    for r in records:
        models = ",".join(r.models) if r.models else "*"
        tags = ",".join(r.tags) or "-"
        print(f"{r.id:<14}{r.team:<16}{r.name:<24}{r.state(now):<9}{models:<24}{tags:<16}{r.expires or '-'}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    settings = settings_module.load(args.config)
    if keys_module.revoke(settings.keys_path, args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"gateway keys revoke: no active key with id {args.key_id}", file=sys.stderr)
    return 1
