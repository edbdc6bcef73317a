"""Memory: how a worker's peak RSS grows with the batch size (TRIBUTARY_BATCH_SIZE), one 1-worker
drain of the same events per size (the drain phase's own 1-worker run stands for its size). The web
and drain processes' own peaks are recorded by their phases and summed up in summary.py."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench.drain import measure_drain
from bench.harness import Environment, Processes, log
from bench.options import Config
from bench.servers import Server


def memory_phase(
    cfg: Config, env: Environment, procs: Processes, server: Server, token: str, drain: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    out = []
    for size in cfg.memory_batch_sizes:
        run = next((d for d in drain if d["workers"] == 1 and d["batch_size"] == size), None)
        if run is None:
            run = asdict(measure_drain(cfg, env, procs, server, token, 1, batch_size=size, name=f"mem{size}"))
        worker = max(kib for name, kib in run["peak_rss_kib"].items() if "scheduler" not in name)
        out.append(
            {
                "batch_size": size,
                "events": run["events"],
                "events_per_s": run["events_per_s"],
                "worker_peak_rss_mib": round(worker / 1024, 1),
                "peak_rss_kib": run["peak_rss_kib"],
            }
        )
        log(
            f"  batch size {size}: worker peak RSS {worker / 1024:.1f} MiB, "
            f"{run['events_per_s']:.0f} events/s"
        )
    return out
