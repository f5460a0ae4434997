"""Every process's CPU time from Linux /proc, for the benchmarks that split the machine's CPU by process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessCpu:
    parent: int
    cpu_s: float  # user + system, since the process started
    title: str  # the first word of its command line (Ray's workers set theirs: ray::RayTrainWorker), else its name


def processes() -> dict[int, ProcessCpu]:
    """Every living process by pid (an exited one that is not yet reaped keeps its time)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)  # "pid (name) state ppid ... utime stime ..."
        fields = fields.split()
        title = command.split(b"\0")[0].decode(errors="replace") or name
        found[int(entry.name)] = ProcessCpu(int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, title)
    return found
