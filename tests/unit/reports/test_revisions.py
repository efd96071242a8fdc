"""Revision changes from first/last times: clean hand-overs need no row, overlaps become windows to read."""

from gateway.reports import revisions


def seen(*spans: tuple[str, int, int]) -> list[dict]:
    return [{"revision": r, "first_ms": a, "last_ms": b, "requests": 1} for r, a, b in spans]


def test_revisions_that_follow_each_other_change_at_the_first_request_of_the_new_one() -> None:
    changes, overlaps = revisions.windows(seen(("a", 0, 100), ("b", 150, 300), ("c", 301, 400)))
    assert [(c["at_ms"], c["from"], c["to"]) for c in changes] == [(150, "a", "b"), (301, "b", "c")]
    assert overlaps == []


def test_a_reload_overlap_and_a_rollback_are_windows_to_read_row_by_row() -> None:
    changes, overlaps = revisions.windows(seen(("a", 0, 1000), ("b", 100, 200), ("c", 990, 2000)))
    assert changes == [] and overlaps == [(100, 200), (990, 1000)]


def test_switches_within_the_settling_time_are_one_change() -> None:
    switches = [
        {"at_ms": 1000, "from": "a", "to": "b"},
        {"at_ms": 1200, "from": "b", "to": "a"},
        {"at_ms": 1300, "from": "a", "to": "b"},
        {"at_ms": 1000 + 5 * revisions.SETTLE_MS, "from": "b", "to": "c"},
    ]
    merged = revisions._settle(switches)
    assert [(m["at_ms"], m["from"], m["to"], m["switches"], m["settled_ms"]) for m in merged] == [
        (1000, "a", "b", 3, 1300),
        (1000 + 5 * revisions.SETTLE_MS, "b", "c", 1, 1000 + 5 * revisions.SETTLE_MS),
    ]
