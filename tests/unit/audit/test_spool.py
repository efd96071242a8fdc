"""The audit spool: appends reach sealed segments whole and once, survive a killed writer, fsync in groups."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import spool
from gateway.audit.spool import SpoolFull, SpoolWriter

ROOT = Path(__file__).resolve().parents[3]
Writers = Callable[..., SpoolWriter]


@pytest.fixture
def writers() -> Iterator[Writers]:
    started: list[SpoolWriter] = []

    def make(directory: Path, **options: Any) -> SpoolWriter:
        writer = SpoolWriter(directory, **options)
        writer.start()
        started.append(writer)
        return writer

    yield make
    for writer in started:
        writer.close()


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def shipped(directory: Path) -> list[bytes]:
    """What a shipper would insert: every record of every sealed segment, the segments removed."""
    records: list[bytes] = []
    for segment in spool.sealed_segments(directory):
        lines, torn = spool.read_segment(segment)
        assert torn == 0
        records += lines
        spool.remove(segment)
    return records


def run_child(directory: Path, body: str, *argv: str) -> "subprocess.Popen[bytes]":
    """A real writer process: `body` runs with `SpoolWriter` imported and `directory` set."""
    code = (
        f"from pathlib import Path\nfrom gateway.audit.spool import SpoolWriter\ndirectory = Path({str(directory)!r})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code + textwrap.dedent(body), *argv], cwd=ROOT)


def test_appends_become_visible_in_sealed_segments_after_seal_after(tmp_path: Path, writers: Writers) -> None:
    writer = writers(tmp_path, seal_after=1.0)
    records = [b'{"n":%d}' % n for n in range(3)]
    for record in records:
        writer.append(record)
    assert spool.sealed_segments(tmp_path) == []  # the live writer's .open file is left alone
    assert len(list(tmp_path.glob("*.open"))) == 1
    wait_for(lambda: spool.sealed_segments(tmp_path))
    assert shipped(tmp_path) == records
    wait_for(lambda: writer.stats()["sealed_segments"] == 1)  # counted just after the rename


def test_a_segment_over_segment_bytes_is_sealed_before_seal_after(tmp_path: Path, writers: Writers) -> None:
    writer = writers(tmp_path, segment_bytes=1000, seal_after=60)
    writer.append(b"x" * 2000)
    wait_for(lambda: spool.sealed_segments(tmp_path))
    assert shipped(tmp_path) == [b"x" * 2000]


def test_concurrent_appends_from_many_threads_keep_every_record_whole_and_once(
    tmp_path: Path, writers: Writers
) -> None:
    writer = writers(tmp_path, segment_bytes=64 * 1024, seal_after=0.02, fsync_interval=0.002)

    def work(thread: int) -> None:
        for n in range(1500):
            pad = b"p" * (100_000 if n % 500 == 0 else n % 300)
            writer.append(b'{"t":%d,"n":%d,"pad":"%s"}' % (thread, n, pad))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    records = shipped(tmp_path)
    keys = Counter(record.split(b',"pad"')[0] for record in records)
    assert len(records) == 8 * 1500 and set(keys.values()) == {1}
    assert all(record.endswith(b'"}') for record in records)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_open_segment_is_sealed_by_the_shipper_with_every_record(tmp_path: Path) -> None:
    child = run_child(
        tmp_path,
        """
        import os, signal
        writer = SpoolWriter(directory, seal_after=60)
        writer.start()
        for n in range(500):
            writer.append(b'{"n":%d}' % n)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert child.wait(30) == -9
    assert len(list(tmp_path.glob("*.open"))) == 1
    [segment] = spool.sealed_segments(tmp_path)
    assert segment.suffix == ".seg" and not list(tmp_path.glob("*.open"))
    assert spool.read_segment(segment) == ([b'{"n":%d}' % n for n in range(500)], 0)


def test_a_torn_last_line_is_ignored_and_counted(tmp_path: Path) -> None:
    segment = tmp_path / "w-000000000001.seg"
    segment.write_bytes(b'{"a":1}\n\n{"b":2}\n{"c":')
    assert spool.read_segment(segment) == ([b'{"a":1}', b'{"b":2}'], 5)


@pytest.mark.parametrize("garbage", [b"", b"\n\n\n", b"\x00" * 64, bytes(range(256)) * 4, b"\xff\xfe\n\x00\n"])
def test_reading_garbage_never_raises(tmp_path: Path, garbage: bytes) -> None:
    segment = tmp_path / "w-000000000001.seg"
    segment.write_bytes(garbage)
    records, torn = spool.read_segment(segment)
    assert all(b"\n" not in record and record for record in records)
    assert sum(len(r) for r in records) + torn <= len(garbage)


def test_spool_full_refuses_without_writing_until_the_shipper_removes_segments(
    tmp_path: Path, writers: Writers
) -> None:
    writer = writers(tmp_path, max_bytes=20_000, seal_after=0.05)
    record = b'{"x":"%s"}' % (b"y" * 990)
    with pytest.raises(SpoolFull):
        for _ in range(100):
            writer.append(record)
    assert writer.full and writer.stats()["full"]
    appended = writer.stats()["appended"]
    assert appended == 20_000 // (len(record) + 1)
    with pytest.raises(SpoolFull):
        writer.append(record)
    wait_for(lambda: spool.sealed_segments(tmp_path))
    assert spool.spool_bytes(tmp_path) == appended * (len(record) + 1)
    assert len(shipped(tmp_path)) == appended
    wait_for(lambda: not writer.full)
    writer.append(record)
    assert writer.stats()["appended"] == appended + 1


def test_two_writer_processes_in_one_directory_do_not_collide(tmp_path: Path) -> None:
    body = """
        import sys
        writer = SpoolWriter(directory, segment_bytes=4096, seal_after=0.01)
        writer.start()
        for n in range(3000):
            writer.append(b'{"w":%s,"n":%d}' % (sys.argv[1].encode(), n))
        writer.close()
        """
    children = [run_child(tmp_path, body, str(tag)) for tag in range(2)]
    assert [child.wait(60) for child in children] == [0, 0]
    records = Counter(shipped(tmp_path))
    assert set(records.values()) == {1} and len(records) == 6000


def test_two_writers_in_one_process_write_their_own_files(tmp_path: Path, writers: Writers) -> None:
    first, second = writers(tmp_path, seal_after=60), writers(tmp_path, seal_after=60)
    assert first.writer != second.writer
    for n in range(100):
        first.append(b'{"w":1,"n":%d}' % n)
        second.append(b'{"w":2,"n":%d}' % n)
    first.close()
    second.close()
    segments = spool.sealed_segments(tmp_path)
    assert sorted(s.name.rsplit("-", 1)[0] for s in segments) == sorted([first.writer, second.writer])
    for segment in segments:
        tags = {record[:6] for record in spool.read_segment(segment)[0]}
        assert len(tags) == 1


def test_fsync_happens_in_groups_on_the_spool_thread_never_in_append(
    tmp_path: Path, writers: Writers, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    writer = writers(tmp_path, fsync_interval=0.01, seal_after=60)
    calls.clear()  # the directory fsync of the first segment, made by start()
    for n in range(5000):
        writer.append(b'{"n":%d}' % n)
        if n % 1000 == 0:
            time.sleep(0.03)
    wait_for(lambda: writer.stats()["fsyncs"] >= 5)
    time.sleep(0.05)
    assert 5 <= len(calls) < 50
    assert set(calls) == {"audit-spool-fsync"}
    assert writer.stats()["fsyncs"] == len(calls)
    idle = len(calls)
    time.sleep(0.1)
    assert len(calls) == idle  # nothing written, nothing to fsync


@pytest.mark.parametrize("record", [b'{"a":1}\n', b'{"a":\n1}', b""])
def test_a_record_that_is_not_one_line_is_refused(tmp_path: Path, writers: Writers, record: bytes) -> None:
    writer = writers(tmp_path)
    with pytest.raises(ValueError):
        writer.append(record)
    assert writer.stats()["appended"] == 0 and spool.spool_bytes(tmp_path) == 0


def test_close_seals_the_last_segment_and_removes_an_empty_one(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    writer.start()
    writer.close()
    assert list(tmp_path.iterdir()) == []
    writer = SpoolWriter(tmp_path, seal_after=60)
    writer.start()
    writer.append(b"{}")
    writer.close()
    assert [p.suffix for p in tmp_path.iterdir()] == [".seg"]
    with pytest.raises(RuntimeError):
        writer.append(b"{}")
