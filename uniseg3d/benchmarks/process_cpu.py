"""CPU seconds spent by this process and every process it starts, by role, while a block runs.

A local Ray's processes (GCS, raylet, the Train controller and helper actors, the training
worker) are all descendants of the driver, so this splits a Ray run's CPU into the training
worker's and the rest: the rest is what Ray costs on cores the training could have used. CPU
seconds move less with a shared machine's load than wall seconds do.

Descendants are sampled every `interval` seconds; one that exits between two samples is counted
as of its last sample, so short-lived processes are undercounted by at most `interval` each.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path

import psutil


def process_role(cmdline: list[str]) -> str:
    """A readable role from a command line: Ray's process titles ("ray::TrainController.run"
    -> "ray::TrainController"), otherwise the executable's name ("/x/raylet" -> "raylet")."""
    if not cmdline:
        return "?"
    first = cmdline[0].split()[0] if cmdline[0].strip() else "?"
    if first.startswith("ray::"):
        return first.split(".")[0]
    name = Path(first).name
    if name.startswith("python") and len(cmdline) > 1:
        script = next((part for part in cmdline[1:] if not part.startswith("-")), "")
        return f"{name} {Path(script).name}".strip()
    return name


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _read(process: psutil.Process) -> tuple[float, str] | None:
    """CPU seconds and role of a process; None once it has gone."""
    try:
        with process.oneshot():
            return _cpu_seconds(process), process_role(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class ProcessTreeCPU:
    """`with ProcessTreeCPU() as cpu: ...`, then `cpu.result()`: the CPU seconds of this process
    and of each descendant role during the block (descendants alive before it start from zero
    at its start)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self._me = psutil.Process(os.getpid())
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-cpu", daemon=True)

    def _sample(self) -> None:
        for child in self._me.children(recursive=True):
            if (read := _read(child)) is None:
                continue
            seconds, role = read
            self._start.setdefault(child.pid, 0.0)
            self._last[child.pid] = seconds
            if role not in ("ray::IDLE", "?") or child.pid not in self._roles:
                # the last role other than idle or unknown (an exited, unreaped child's command
                # line reads empty)
                self._roles[child.pid] = role

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "ProcessTreeCPU":
        self._driver_start = _cpu_seconds(self._me)
        for child in self._me.children(recursive=True):
            if (read := _read(child)) is not None:
                self._start[child.pid] = self._last[child.pid] = read[0]
                self._roles[child.pid] = read[1]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._driver = _cpu_seconds(self._me) - self._driver_start

    def result(self) -> dict:
        """{"driver": s, "children": s, "by_role": {role: s}} over the block."""
        by_role: dict[str, float] = defaultdict(float)
        for pid, last in self._last.items():
            by_role[self._roles[pid]] += last - self._start[pid]
        return {"driver": self._driver, "children": sum(by_role.values()),
                "by_role": dict(sorted(by_role.items(), key=lambda item: -item[1]))}
