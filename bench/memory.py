"""Memory: how a worker's peak RSS grows with the batch size (TRIBUTARY_BATCH_SIZE), one drain of
the same events per size with one worker. The web and drain processes' own peaks are recorded by
their phases (servers' `peak_rss_kib`, drain runs' `peak_rss_kib`) and summed up in summary.py."""

from __future__ import annotations

from typing import Any

from bench.drain import measure_drain
from bench.harness import Environment, Processes, log
from bench.options import Config
from bench.servers import Server


def memory_phase(
    cfg: Config, env: Environment, procs: Processes, server: Server, token: str
) -> list[dict[str, Any]]:
    out = []
    for size in cfg.memory_batch_sizes:
        run = measure_drain(cfg, env, procs, server, token, 1, batch_size=size, name=f"mem{size}")
        worker = max(kib for name, kib in run.peak_rss_kib.items() if "scheduler" not in name)
        out.append(
            {
                "batch_size": size,
                "events": run.events,
                "events_per_s": run.events_per_s,
                "worker_peak_rss_mib": round(worker / 1024, 1),
                "peak_rss_kib": run.peak_rss_kib,
            }
        )
        log(f"  batch size {size}: worker peak RSS {worker / 1024:.1f} MiB, {run.events_per_s:.0f} events/s")
    return out
