"""This host's CPU and memory use, read from /proc."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU jiffies: busy and total."""

    busy: int
    total: int


def read_cpu_times(proc: Path = PROC) -> CpuTimes:
    """The first line of /proc/stat, as busy and total jiffies."""
    fields = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return CpuTimes(busy=total - idle, total=total)


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float:
    """CPU busy between two readings, in percent of all CPUs."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * (after.busy - before.busy) / elapsed))


def memory_percent(proc: Path = PROC) -> float:
    """Memory in use (total less available), in percent."""
    info = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0])
    total = info["MemTotal"]
    return 100.0 * (total - info["MemAvailable"]) / total if total else 0.0


class HostLoadMeter:
    """CPU use since the previous reading, and memory use now."""

    def __init__(self, proc: Path = PROC) -> None:
        self._proc = proc
        self._last = read_cpu_times(proc)

    def read(self) -> tuple[float, float]:
        """(cpu %, memory %)."""
        now = read_cpu_times(self._proc)
        cpu = cpu_percent(self._last, now)
        self._last = now
        return cpu, memory_percent(self._proc)
