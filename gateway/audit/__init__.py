"""The audit trail: one event per request, spooled locally, shipped to ClickHouse, hash-chained and signed."""
