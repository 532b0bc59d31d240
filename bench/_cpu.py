"""CPU seconds used by this process and every process under it, read from ``/proc``."""

from __future__ import annotations

import os
from collections.abc import Mapping
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


SELF = "this process"
"""The program name of the measuring process itself in ``tree_cpu_by_program``."""


def _program(pid: int) -> str:
    """What process ``pid`` runs: the module of ``python -m module``, else its executable's
    name."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [word.decode(errors="replace") for word in argv if word]
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return os.path.basename(words[0]) if words else "?"


def tree_cpu_by_program(root: int | None = None) -> dict[str, float]:
    """CPU seconds ``root`` (this process by default) and its living descendants have used,
    summed by program (``SELF`` for ``root``): servers, services and workers started for a
    run are counted, exited ones are not."""
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
    used_by: dict[str, float] = {}
    todo = [root] if root in ticks else []
    while todo:
        pid = todo.pop()
        name = SELF if pid == root else _program(pid)
        used_by[name] = used_by.get(name, 0.0) + ticks[pid] / os.sysconf("SC_CLK_TCK")
        todo.extend(children.get(pid, []))
    return used_by


def cpu_used_since(before: dict[str, float], writes: int) -> dict[str, float]:
    """CPU milliseconds per write each program used since ``before`` was taken."""
    used = {
        name: (total - before.get(name, 0.0)) * 1e3 / writes
        for name, total in tree_cpu_by_program().items()
    }
    return dict(sorted(used.items(), key=lambda item: -item[1]))


def by_program(used: Mapping[str, float], *, own: str, digits: int = 3) -> str:
    """A figure per program as text, largest first, ``SELF`` called ``own``; figures that
    round to zero left out."""
    ranked = sorted(used.items(), key=lambda item: -item[1])
    return ", ".join(
        f"{own if name == SELF else name} {value:.{digits}f}"
        for name, value in ranked
        if round(value, digits) > 0
    )
