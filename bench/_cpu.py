"""CPU seconds used by this process and every process under it, read from ``/proc``."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat(pid: str) -> tuple[int, int] | None:
    """The parent and the user plus system clock ticks of process ``pid``; None if gone."""
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_cpu_s(root: int | None = None) -> float:
    """CPU seconds ``root`` (this process by default) and its living descendants have used:
    servers, services and workers started for a run are counted, exited ones are not."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        found = _stat(entry.name)
        if found is None:
            continue
        parent, used = found
        pid = int(entry.name)
        ticks[pid] = used
        children.setdefault(parent, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / os.sysconf("SC_CLK_TCK")
