"""Where the machine's idle time falls while `tributary serve` is measured, from the scheduler.

serve leaves about a fifth of the machine idle at 16 connections, bare Flask a tenth, and with its
worker stopped serve leaves about as little as bare Flask (bench/README.md, 2026-12-06 09:20). Two
explanations fit that: the web waiting for SQLite's write lock while the worker's batch holds it
(every request in flight soon waits for a commit, so the web's processes stop and a CPU stands
idle beside the worker), or idle time the worker causes some other way. CPU counters from `/proc`
cannot tell them apart; the scheduler's own record can. `perf sched record` logs every context
switch on every CPU; `perf sched timehist` turns them into who ran on which CPU, and when. From
that timeline:

- **idle beside the worker**: of the machine's idle CPU time, the share that fell while serve's
  worker was running on another CPU;
- **worker beside idle**: of the worker's running time, the share during which at least one other
  CPU stood idle.

A hold that stalls the web shows as both being high (2026-12-06, 12:00: 44 % and 59 %). Recording
needs `perf` and the right to trace the scheduler (root, or `kernel.perf_event_paranoid` <= -1):
without them the figures are absent, never guessed.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Recording", "Slice", "beside_worker", "parse_timehist"]

# `perf sched timehist` lines: time (s), [cpu], task, wait, scheduling delay, run time (ms). The task
# is `comm[tid/pid]` for a thread of a process with several, `comm[pid]` otherwise, `<idle>` for
# the idle task; a comm may hold spaces, so the line is read from both ends.
_LINE = re.compile(
    r"^\s*(?P<time>\d+\.\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<task>.*?)\s+"
    r"(?P<wait>\d+\.\d+)\s+(?P<delay>\d+\.\d+)\s+(?P<run>\d+\.\d+)\s*$"
)
_PID = re.compile(r"\[(\d+)(?:/(\d+))?\]$")
IDLE = -1  # the pid of a slice where the CPU ran nothing


@dataclass(frozen=True, slots=True)
class Slice:
    """One stretch of one CPU running one process (`pid`, or `IDLE`), in milliseconds."""

    cpu: int
    start: float
    end: float
    pid: int


def parse_timehist(text: str) -> list[Slice]:
    """The slices of `perf sched timehist` output; header and unparsed lines are skipped."""
    slices = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        task = match["task"]
        if task == "<idle>":
            pid = IDLE
        elif (found := _PID.search(task)) is not None:
            pid = int(found[2] or found[1])
        else:
            continue
        end = float(match["time"]) * 1000
        slices.append(Slice(int(match["cpu"]), end - float(match["run"]), end, pid))
    return slices


def beside_worker(slices: Iterable[Slice], worker: int) -> dict[str, float] | None:
    """Idle beside the worker and worker beside idle (see the module's docstring), as shares, with
    the milliseconds they come from; None when the timeline holds no idle time or no worker."""
    edges: list[tuple[float, int, int]] = []  # (time, +1 starts / -1 ends, pid)
    for piece in slices:
        if piece.end > piece.start:
            edges += [(piece.start, 1, piece.pid), (piece.end, -1, piece.pid)]
    edges.sort()
    idle = worker_running = 0  # CPUs idle, CPUs running the worker, at the sweep's point
    idle_ms = idle_beside_ms = worker_ms = worker_beside_ms = 0.0
    previous = edges[0][0] if edges else 0.0
    for time, step, pid in edges:
        span = time - previous
        idle_ms += span * idle
        worker_ms += span * worker_running
        if worker_running:
            idle_beside_ms += span * idle
            if idle:
                worker_beside_ms += span * worker_running
        previous = time
        if pid == IDLE:
            idle += step
        elif pid == worker:
            worker_running += step
    if idle_ms <= 0 or worker_ms <= 0:
        return None
    return {
        "idle_beside_worker": round(idle_beside_ms / idle_ms, 3),
        "worker_beside_idle": round(worker_beside_ms / worker_ms, 3),
        "idle_ms": round(idle_ms, 1),
        "worker_ms": round(worker_ms, 1),
    }


class Recording:
    """`perf sched record` of the whole machine for `seconds`, from `delay` seconds after `start`
    (past the load's warmup). `start` returns False, and nothing is recorded, without `perf` or the
    right to use it."""

    def __init__(self, delay: float, seconds: float) -> None:
        self.delay, self.seconds = delay, seconds
        self._dir = Path()
        self._perf = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        perf = shutil.which("perf")
        if perf is None:
            return False
        self._perf = perf
        self._dir = Path(tempfile.mkdtemp(prefix="bench-sched-"))
        data = self._dir / "perf.data"
        # perf starts after the delay so that its file holds the measured stretch only.
        script = f'sleep {self.delay:.1f} && exec "$0" sched record -o "$1" -- sleep {self.seconds:.1f}'
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", script, perf, str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return True

    def timeline(self) -> list[Slice]:
        """Wait for the recording; its slices (none when it failed)."""
        if self._proc is None:
            return []
        try:
            if self._proc.wait(timeout=self.delay + self.seconds + 60) != 0:
                return []
            out = subprocess.run(
                [self._perf, "sched", "timehist", "-i", str(self._dir / "perf.data")],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            return parse_timehist(out.stdout) if out.returncode == 0 else []
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return []
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
