"""`gateway report compliance|verify`: the signed compliance report, and checking a report's signature.

    gateway report compliance --config gateway.yaml --from 2026-11-01 --to 2026-12-01 [--team T]
                              [--format html|pdf|json|csv] --out FILE [--verify full|checkpoints|skip] [--progress]
    gateway report verify FILE [--key PUB ...] [--config gateway.yaml]

`--to` is excluded (as in `gateway audit verify`): a month is `--from 2026-11-01 --to 2026-12-01`. The format
defaults to the extension of --out. The report is written, then signed in FILE.sig (gateway.reports.signing).
`verify` trusts the public keys given with --key, and with --config the audit's (the signing key's `.pub` and
`audit.trusted_keys`); it exits
0 with "valid, signed by <key id>", 1 naming what is wrong (tampered content, unknown key, missing signature),
2 on bad usage.
"""

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import settings as settings_module

FORMATS = ("html", "pdf", "json", "csv")


def add_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="compliance reports").add_subparsers(dest="report", required=True)
    compliance = report.add_parser("compliance", help="the signed compliance report of a period")
    compliance.add_argument("--config", required=True)
    compliance.add_argument("--from", dest="start", required=True, type=_moment, help="ISO date or datetime (UTC)")
    compliance.add_argument("--to", dest="end", required=True, type=_moment, help="excluded: ISO date or datetime")
    compliance.add_argument("--team", help="only this team's requests")
    compliance.add_argument("--format", choices=FORMATS, help="default: the extension of --out")
    compliance.add_argument("--out", required=True, type=Path)
    compliance.add_argument(
        "--verify",
        choices=("full", "checkpoints", "skip"),
        default="full",
        help="chain verification: rehash every row (full), check the signed checkpoints only, or skip",
    )
    compliance.add_argument("--progress", action="store_true", help="progress on stderr (default: when a terminal)")
    compliance.set_defaults(run=cmd_compliance)
    verify = report.add_parser("verify", help="check a report file against its signature (FILE.sig)")
    verify.add_argument("file", type=Path)
    verify.add_argument("--key", action="append", type=Path, default=[], help="a trusted public key (PEM)")
    verify.add_argument("--config", help="trust the audit signing key of this gateway.yaml")
    verify.set_defaults(run=cmd_verify)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fail(message: str, code: int = 2) -> int:
    print(f"gateway report: {message}", file=sys.stderr)
    return code


def cmd_compliance(args: argparse.Namespace) -> int:
    fmt = args.format or args.out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        return _fail(f"--format is one of {', '.join(FORMATS)} (or give --out a .html/.pdf/.json/.csv name)")
    if args.start >= args.end:
        return _fail("--from must be before --to")
    settings = settings_module.load(args.config)
    if settings.audit is None:
        return _fail(f"{args.config} has audit switched off: there is no audit trail to report on")
    from gateway.audit.reads import ReadError
    from gateway.audit.store import StoreLocked
    from gateway.reports import compliance

    try:
        report = compliance.generate(settings, args.start, args.end, args.team, args.verify, args.progress)
    except (StoreLocked, ReadError) as exc:
        return _fail(f"cannot read the audit store: {exc}")
    data = compliance.render(report, fmt)
    _write(args.out, data)
    try:
        key_id, sig = compliance.sign(settings, args.out)
    except (OSError, ValueError) as exc:
        return _fail(f"wrote {args.out} but could not sign it with the audit signing key: {exc}")
    print(f"wrote {args.out} ({len(data):,} bytes, {fmt}), signed by {key_id} in {sig}")
    for section in report.sections:
        if section.status == "attention":
            print(f"attention: {section.title}: {section.summary}", file=sys.stderr)
    return 0


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.audit.chain import public_key_id
    from gateway.reports import signing

    if not args.key and not args.config:
        return _fail("no trusted key: give --key PUB (the audit signing key's .pub) or --config gateway.yaml")
    pems = settings_module.load(args.config).audit_public_keys() if args.config else []
    for path in args.key:
        try:
            pems.append(path.read_bytes())
        except OSError as exc:
            return _fail(f"cannot read the public key {path}: {exc}")
    try:
        trusted = {public_key_id(pem): pem for pem in pems}
    except ValueError as exc:
        return _fail(f"not a PEM public key: {exc}")
    checked = signing.check(args.file, trusted)
    if checked.ok:
        print(f"valid, signed by {checked.key_id}")
        return 0
    print(f"INVALID: {checked.problem}")
    return 1
