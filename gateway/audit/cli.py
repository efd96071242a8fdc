"""`gateway audit ship|verify|tail|query`: the audit trail for operators and auditors.

ship    move spooled events into ClickHouse (what `gateway serve` runs as its child process)
verify  recompute the hash chain and check the signed checkpoints; exit 1 naming the first broken row
tail    the last N events
query   events by team, key, model, status and time range
body    the decrypted body of one event (with `audit.bodies`; needs GATEWAY_MASTER_KEY)
shred   destroy a team's body keys: every body stored for the team becomes unreadable
"""

import argparse
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from gateway import codec
from gateway import settings as settings_module
from gateway.settings import Settings


def add_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(dest="audit", required=True)
    ship = audit.add_parser("ship", help="ship spooled events to ClickHouse (run by `gateway serve`)")
    ship.add_argument("--config", required=True)
    ship.add_argument(
        "--until-stdin-closes", action="store_true", help="stop when stdin ends (as gateway serve runs it)"
    )
    ship.set_defaults(run=cmd_ship)
    verify = audit.add_parser("verify", help="prove no row was altered, removed or inserted")
    verify.add_argument("--config", required=True)
    verify.add_argument("--from", dest="start", type=_moment, help="ISO date or datetime (UTC)")
    verify.add_argument("--to", dest="end", type=_moment)
    verify.set_defaults(run=_guarded(cmd_verify))
    tail = audit.add_parser("tail", help="the last events")
    tail.add_argument("--config", required=True)
    tail.add_argument("-n", type=int, default=20)
    tail.add_argument("--json", action="store_true")
    tail.set_defaults(run=_guarded(cmd_tail))
    query = audit.add_parser("query", help="events by team, key, model, status, time range")
    query.add_argument("--config", required=True)
    for name in ("team", "key", "model"):
        query.add_argument(f"--{name}")
    query.add_argument("--status", type=int)
    query.add_argument("--from", dest="start", type=_moment)
    query.add_argument("--to", dest="end", type=_moment)
    query.add_argument("--limit", type=int, default=100)
    query.add_argument("--json", action="store_true")
    query.set_defaults(run=_guarded(cmd_query))
    body = audit.add_parser("body", help="the decrypted body of one event (needs GATEWAY_MASTER_KEY)")
    body.add_argument("event_id")
    body.add_argument("--config", required=True)
    body.set_defaults(run=_guarded(cmd_body))
    shred = audit.add_parser("shred", help="destroy a team's body keys: its stored bodies become unreadable")
    shred.add_argument("--team", required=True)
    shred.add_argument("--config", required=True)
    shred.set_defaults(run=cmd_shred)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _settings(path: str) -> Settings | None:
    settings = settings_module.load(path)
    if settings.audit is None:
        print(f"gateway audit: {path} has no `audit:` section", file=sys.stderr)
        return None
    return settings


def _store(settings: Settings) -> Any:
    """A reader of the audit store: this process's own, or the running gateway's shipper's (gateway.audit.reads)."""
    from gateway.audit.reads import open_reader  # the ClickHouse client (and chDB) load only for these commands

    return open_reader(settings)


def _guarded(command: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from gateway.audit.reads import ReadError
        from gateway.audit.store import StoreLocked

        try:
            return int(command(args))
        except StoreLocked as exc:
            hint = "its shipper does not answer reads (is `gateway serve` running with run_shipper: true?)"
            print(f"gateway audit: {exc}; {hint}", file=sys.stderr)
            return 2
        except ReadError as exc:
            print(f"gateway audit: {exc}", file=sys.stderr)
            return 2

    return run


def cmd_ship(args: argparse.Namespace) -> int:
    from gateway.audit import shipper

    settings = _settings(args.config)
    return 2 if settings is None else shipper.main(settings, watch_stdin=args.until_stdin_closes)


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return 2
    result = _store(settings).verify(args.start, args.end)
    if result.ok:
        chains = f" in {result.chains} chains" if result.chains > 1 else ""
        print(f"ok: {result.rows_checked} rows and {result.checkpoints_checked} signed checkpoints verified{chains}")
        return 0
    print(f"FAILED after {result.rows_checked} rows: {result.first_problem}")
    return 1


def cmd_tail(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return 2
    _print(_store(settings).tail(args.n), args.json)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if settings is None:
        return 2
    rows = _store(settings).query(
        team=args.team,
        key_id=args.key,
        model=args.model,
        status=args.status,
        start=args.start,
        end=args.end,
        limit=args.limit,
    )
    _print(rows, args.json)
    return 0


def cmd_body(args: argparse.Namespace) -> int:
    from gateway.audit import bodies, keyring

    settings = _settings(args.config)
    if settings is None:
        return 2
    assert settings.audit is not None
    try:
        uuid.UUID(args.event_id)
    except ValueError:
        print(f"gateway audit body: {args.event_id!r} is not an event id (a UUID)", file=sys.stderr)
        return 2
    keys = keyring.Keyring(settings.near(settings.audit.body_keys), keyring.master_key())
    rows = _store(settings).query(event_id=args.event_id, limit=1)
    if not rows:
        print(f"gateway audit body: no event {args.event_id}", file=sys.stderr)
        return 1
    row = rows[0]
    try:
        document = bodies.reveal(keys, row["body"], row["event_id"], row["team"])
    except bodies.NoBody as exc:
        print(f"gateway audit body: {exc}", file=sys.stderr)
        return 1
    except bodies.Unreadable as exc:
        print(f"unreadable: {exc}", file=sys.stderr)
        return 1
    except keyring.KeyringError as exc:
        print(f"gateway audit body: {exc}", file=sys.stderr)
        return 2
    shown = {"event_id": row["event_id"], "team": row["team"], **bodies.readable(document)}
    print(codec.dumps_pretty(shown).decode())
    return 0


def cmd_shred(args: argparse.Namespace) -> int:
    from gateway.audit import keyring

    settings = _settings(args.config)
    if settings is None:
        return 2
    assert settings.audit is not None
    destroyed = keyring.shred(settings.near(settings.audit.body_keys), args.team)
    if destroyed:
        print(f"destroyed {destroyed} key(s) of team {args.team!r}: its stored bodies are unreadable")
    else:
        print(f"destroyed 0 keys: team {args.team!r} has no body key (nothing of it is readable)")
    return 0


COLUMNS = ("ts", "team", "key_id", "route", "model_requested", "status", "latency_ms", "request_id")


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(codec.dumps_pretty(rows).decode())
        return
    print("  ".join(f"{c.upper():<16}" for c in COLUMNS))
    for row in rows:
        print("  ".join(f"{str(row.get(c, ''))[:32]:<16}" for c in COLUMNS))
