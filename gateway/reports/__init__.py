"""Compliance reports over the audit trail: `gateway report compliance` and `gateway report verify`.

The sections, in the order they appear (each built from the audit rows of the period, optionally one team):

    period        the period (UTC, end excluded), the team filter, requests, first and last request
    policies      the policy revisions that decided requests (first/last seen, requests), every revision
                  change (time, from → to), the current policy files with their rules
    requests      requests by team, virtual key and model, by status class, with tokens and cost; per day
    decisions     blocked, warned, shadowed (and redacted) requests by policy rule
    pii           PII detections by entity type and action
    spend         cost by team and key, spend against every budget rule per period and scope, thresholds crossed
    failures      failed requests (5xx, no answer) and degraded ones (retried, fallback, client disconnected)
    coverage      audit rows vs the hash chain: per chain the seq range, missing or repeated seqs, checkpoints
    verification  the chain verification of the period (full, checkpoints only, or skipped) and its result
    retention     audit.retention_days, the tables' TTL in ClickHouse, the oldest row, whether bodies are stored

Modules: queries (the SQL, one function per section), revisions (revision changes), sections / spend /
integrity (the sections), build (the steps, progress), model (the report as data, JSON), charts,
render_html, render_pdf, render_csv, signing (Ed25519, detached FILE.sig), compliance (generate, render,
sign), cli.
"""
