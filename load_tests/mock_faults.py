"""Fault injection for the mock upstream: which fault, if any, a request for a given model gets.

A fault is chosen, in this order, by
1. the runtime table set with `POST /_mock/faults` (`{"<model>": {...}}`), exact model name first;
2. the runtime table entry for `"*"` (every model);
3. markers in the model name itself, so a test selects a fault just by naming a model in the gateway's config.
   A marker is the first or the last `-`-separated token of the model name:

   | marker      | fault                                                        | examples                       |
   |-------------|--------------------------------------------------------------|--------------------------------|
   | `fail<NNN>` | answer with HTTP status NNN and an OpenAI error body         | `fail503-gpt`, `mock-fail429`  |
   | `hang`      | never answer (wait until the client goes away)               | `hang-mock`, `mock-hang`       |
   | `drop`      | close the connection before sending anything                 | `drop-mock`                    |
   | `cut<N>`    | streams: send N chunks then close the connection (default 2) | `mock-cut3`, `cut-mock`        |
   | `slow<MS>`  | add MS milliseconds of latency before answering              | `slow250-mock`                 |

   A prefix and a suffix combine: `slow100-mock-fail500`.

Runtime entries may carry `times: N` (the entry applies to the next N requests, then removes itself, e.g. fail once
then succeed, to test retries) and `chunk_delay_ms` (this model's streams pause so long between chunks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

_MARKER = re.compile(r"^(?:fail(\d{3})|(hang)|(drop)|cut(\d*)|slow(\d+))$")
_DISCONNECTS = (None, "before", "mid_stream")


class FaultError(ValueError):
    """A fault specification that cannot be used; the message says why."""


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) a normal answer."""

    status: int | None = None
    body: Any = None
    latency_ms: float = 0
    chunk_delay_ms: float | None = None
    hang: bool = False
    disconnect: str | None = None
    after_chunks: int = 2
    retry_after: float | int | str | None = None
    times: int | None = None

    @classmethod
    def from_json(cls, spec: Any) -> Fault:
        """Validate one entry of the `POST /_mock/faults` table."""
        if not isinstance(spec, dict):
            raise FaultError("a fault must be a JSON object")
        unknown = set(spec) - {f.name for f in fields(cls)}
        if unknown:
            raise FaultError(f"unknown fault fields: {sorted(unknown)}")
        fault = cls(**spec)
        if fault.disconnect not in _DISCONNECTS:
            raise FaultError("disconnect must be 'before', 'mid_stream' or null")
        if fault.status is not None and not (isinstance(fault.status, int) and 100 <= fault.status <= 599):
            raise FaultError("status must be an HTTP status code")
        return fault

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _token_fault(token: str) -> Fault | None:
    match = _MARKER.match(token)
    if match is None:
        return None
    status, hang, drop, cut, slow = match.groups()
    if status:
        return Fault(status=int(status), retry_after=1 if status == "429" else None)
    if hang:
        return Fault(hang=True)
    if drop:
        return Fault(disconnect="before")
    if slow:
        return Fault(latency_ms=float(slow))
    return Fault(disconnect="mid_stream", after_chunks=int(cut) if cut else 2)


def _merge(first: Fault, second: Fault) -> Fault:
    """Combine a prefix and a suffix marker: latencies add, the other fields of `second` win when set."""
    changes = {
        f.name: getattr(second, f.name) for f in fields(second) if getattr(second, f.name) != getattr(Fault(), f.name)
    }
    changes["latency_ms"] = first.latency_ms + second.latency_ms
    return replace(first, **changes)


def marker_fault(model: str) -> Fault | None:
    """The fault named by markers at the start or end of `model`, or None."""
    tokens = model.split("-")
    prefix = _token_fault(tokens[0])
    suffix = _token_fault(tokens[-1]) if len(tokens) > 1 else None
    if prefix and suffix:
        return _merge(prefix, suffix)
    return prefix or suffix


class FaultTable:
    """The runtime fault table plus a memo of marker faults by model name."""

    def __init__(self) -> None:
        self.entries: dict[str, Fault] = {}
        self._remaining: dict[str, int] = {}
        self._markers: dict[str, Fault | None] = {}

    def replace(self, spec: Any) -> None:
        """Replace the runtime table with `spec` ({model: fault}); raises FaultError, keeping the old table."""
        if not isinstance(spec, dict):
            raise FaultError("the fault table must be a JSON object keyed by model name")
        entries = {str(model): Fault.from_json(value) for model, value in spec.items()}
        self.entries = entries
        self._remaining = {m: f.times for m, f in entries.items() if f.times is not None}

    def clear(self) -> None:
        self.entries, self._remaining = {}, {}

    def lookup(self, model: Any) -> Fault | None:
        """The fault for one request for `model`, consuming one use of a `times`-limited entry."""
        if not isinstance(model, str):
            model = ""
        if self.entries:
            key = model if model in self.entries else "*" if "*" in self.entries else None
            if key is not None:
                return self._use(key)
        if model not in self._markers:
            if len(self._markers) > 4096:
                self._markers.clear()
            self._markers[model] = marker_fault(model)
        return self._markers[model]

    def _use(self, key: str) -> Fault:
        fault = self.entries[key]
        if key in self._remaining:
            self._remaining[key] -= 1
            if self._remaining[key] <= 0:
                del self.entries[key], self._remaining[key]
        return fault
