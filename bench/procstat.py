"""What the kernel says about processes: CPU time per role between two snapshots, peak memory, and
whether the machine is quiet enough to measure (all from /proc)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, process group, utime + stime in clock ticks) or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    parents: dict[int, list[int]] = {}
    for pid in pids():
        stat = proc_stat(pid)
        if stat is not None:
            parents.setdefault(stat[1], []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if proc_stat(pid) is None:
            continue
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set size of a live process (VmHWM), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) clock ticks of the whole machine since boot, from one read of
    `/proc/stat`. Steal is the time the hypervisor gave this machine's CPUs to other guests: part
    of busy, and no process of ours or anyone's here."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total, values[7]


def busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine since boot."""
    busy, total, _ = machine_ticks()
    return busy, total


@dataclass
class CpuSnapshot:
    at: float
    busy: int
    total: int
    procs: dict[int, tuple[str, int]]  # pid -> (classification text, ticks)
    self_seconds: float
    steal: int = 0  # `machine_ticks`'s


def cpu_snapshot() -> CpuSnapshot:
    busy, total, steal = machine_ticks()
    procs: dict[int, tuple[str, int]] = {}
    for pid in pids():
        stat = proc_stat(pid)
        if stat is not None:
            procs[pid] = (f"{stat[0]}\0{cmdline(pid)}", stat[3])
    times = os.times()
    return CpuSnapshot(time.monotonic(), busy, total, procs, times.user + times.system, steal)


# A process serving one database: a client backend ("user db host(port) state") or an autovacuum
# worker ("autovacuum worker db"). The rest (checkpointer, WAL writer, ...) serves everyone.
_PG_FOR_ONE_DATABASE = re.compile(r"\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]|::1?\(\d+\)|autovacuum worker")


def cpu_breakdown(
    before: CpuSnapshot,
    after: CpuSnapshot,
    roles: Mapping[str, list[int]],
    database: str,
    extra: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, by role.

    `roles` maps a role to the pids that play it (web server tree, worker processes). `postgres` is
    our database's backends and autovacuum workers; `pg shared` the server's own processes (WAL
    writer, checkpointer, ...), which also work for other databases (a test run dropping its
    database forces a checkpoint); other databases' backends belong to `other`. `extra` is CPU
    measured elsewhere, for processes that exited before the second snapshot (wrk, from its rusage).
    `other` is everything the machine did that is not ours, including processes that came and went:
    on a shared machine it says how disturbed the measurement was. `steal` is the time the
    hypervisor ran other guests on our CPUs (in `machine busy`, not in `other`): a virtual machine
    on a busy host loses it to its neighbours, and every figure measured meanwhile is slower.
    """
    role_of = {pid: role for role, pids in roles.items() for pid in pids}
    spent: dict[str, float] = {role: 0.0 for role in roles}
    spent.update({"postgres": 0.0, "pg shared": 0.0, "redis": 0.0})
    for pid, (label, ticks) in after.procs.items():
        delta = ticks - before.procs.get(pid, (label, 0))[1]
        if delta <= 0 or pid == os.getpid():
            continue
        comm, _, cmd = label.partition("\0")
        if pid in role_of:
            role = role_of[pid]
        elif comm.startswith("redis-server"):
            role = "redis"
        elif cmd.startswith("postgres") or comm == "postgres":
            if f" {database} " in f"{cmd} ":
                role = "postgres"
            elif not _PG_FOR_ONE_DATABASE.search(cmd):
                role = "pg shared"
            else:
                continue  # another database's: part of `other`
        else:
            continue
        spent[role] = spent.get(role, 0.0) + delta / HZ
    spent["bench harness"] = after.self_seconds - before.self_seconds
    for role, seconds in (extra or {}).items():
        spent[role] = spent.get(role, 0.0) + seconds
    busy = (after.busy - before.busy) / HZ
    steal = (after.steal - before.steal) / HZ
    spent["other"] = max(0.0, busy - steal - sum(spent.values()))
    spent["steal"] = steal
    spent["machine busy"] = busy
    spent["machine capacity"] = (after.total - before.total) / HZ
    return {k: round(v, 3) for k, v in spent.items()}
