"""How much CPU something other than the benchmark used during a measurement.

A benchmark on a shared machine is only as good as its quietness. `CpuWindow` samples the machine's busy
time (user + nice + system, from /proc/stat) and the CPU time of the benchmark's own processes (the
servers by PID, wrk as a reaped child, this process) at the start and end of a run; the difference is
"foreign" CPU, reported in percent of one core. A few percent is noise; tens of percent mean the numbers
of that run are not trustworthy.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Seconds of user + nice + system time on all cores since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / TICKS


def process_cpu(pid: int) -> float:
    """Seconds of CPU used by `pid` (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu() -> float:
    """CPU seconds of this process plus its reaped children (wrk runs)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class CpuWindow:
    """Foreign CPU over one measurement window, given the PIDs of the benchmark's running servers."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.per_pid = {pid: process_cpu(pid) for pid in pids}
        self.start = self.sample()

    def sample(self) -> tuple[float, float, float]:
        ours = own_cpu() + sum(process_cpu(pid) for pid in self.pids)
        return time.monotonic(), machine_busy(), ours

    def foreign_percent(self) -> float:
        """Percent of one core used by other processes since the window opened."""
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self.sample()
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / max(t1 - t0, 1e-9) * 100

    def process_percent(self, pid: int) -> float:
        """Percent of one core used by `pid` (one of ours) since the window opened."""
        elapsed = max(time.monotonic() - self.start[0], 1e-9)
        return (process_cpu(pid) - self.per_pid.get(pid, 0.0)) / elapsed * 100
