"""The compliance report from a gateway.yaml: what the CLI calls, and what tests and tools can call.

generate(settings, start, end, team, verify, progress) -> Report    reads the audit store (open_reader)
render(report, fmt) -> bytes                                       html | pdf | json | csv
sign(settings, path) -> (key id, signature path)                   with the audit signing key
"""

from datetime import datetime
from pathlib import Path

from gateway.audit.chain import Signer, public_key_id
from gateway.audit.reads import open_reader
from gateway.auth.keys import KeyStore
from gateway.policy import loader
from gateway.policy.compiled import PolicySet
from gateway.reports import model, signing
from gateway.reports.build import Context, Progress, build
from gateway.reports.model import Report
from gateway.reports.queries import Scope
from gateway.settings import Settings
from gateway.yamlconf import ConfigError


def _policies(settings: Settings) -> tuple[PolicySet | None, str | None]:
    directory = settings.policy_dir
    if directory is None:
        return None, None
    try:
        return loader.load(directory), None
    except ConfigError as exc:
        return None, str(exc).splitlines()[0] if str(exc) else "it does not load"


def _public_keys(settings: Settings) -> dict[str, bytes]:
    """The keys the audit chain is verified with: this installation's own and `audit.trusted_keys`."""
    return {public_key_id(pem): pem for pem in settings.audit_public_keys()}


def generate(
    settings: Settings,
    start: datetime,
    end: datetime,
    team: str | None = None,
    verify: str = "full",
    progress: bool = False,
) -> Report:
    assert settings.audit is not None, "the report reads the audit trail"
    policies, problem = _policies(settings)
    keys = tuple(KeyStore(settings.keys_path).records()) if settings.keys_path.exists() else ()
    reader = open_reader(settings)
    try:
        context = Context(
            reader=reader,
            scope=Scope(settings.audit.database, start, end, team),
            settings=settings,
            policies=policies,
            policy_problem=problem,
            keys=keys,
            trusted_keys=_public_keys(settings),
            verify=verify,
        )
        return build(context, Progress.auto(progress))
    finally:
        reader.close()


def render(report: Report, fmt: str) -> bytes:
    if fmt == "json":
        return model.to_json(report)
    if fmt == "csv":
        from gateway.reports import render_csv

        return render_csv.render(report)
    if fmt == "html":
        from gateway.reports import render_html

        return render_html.render(report)
    if fmt == "pdf":
        from gateway.reports import render_pdf

        return render_pdf.render(report)
    raise ValueError(f"unknown report format {fmt!r}")


def sign(settings: Settings, path: Path) -> tuple[str, Path]:
    assert settings.audit is not None
    signer = Signer.load_or_create(settings.near(settings.audit.signing_key))
    return signer.public_key_id, signing.sign(path, signer)
