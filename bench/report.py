"""The printed report: one table per phase, then every figure against its target."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import REPO
from bench.procstat import NCPU
from bench.targets import targets_table


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _rss_line(label: str, peaks: Mapping[str, int]) -> str:
    """One line per role: the main process, its workers, and the sum, in MiB."""
    parts = [f"{name} {_mib(kib)}" for name, kib in peaks.items()]
    return f"  {label:<34} sum {_mib(sum(peaks.values())):>6}  ({', '.join(parts)})"


def _share(cpu: Mapping[str, float], role: str) -> str:
    return f"{cpu.get(role, 0.0) / max(1e-9, cpu['machine capacity']):.0%}"


def _table(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Rows of cells as aligned text: columns in `left` flush left, the others (numbers) flush right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def _median_and_rounds(median: float, each: list[float]) -> str:
    """A figure's median and, when measured in several rounds, each round's value."""
    text = f"{median:.2f}"
    return text if len(each) < 2 else f"{text} [{' '.join(f'{x:.2f}' for x in each)}]"


def _rounds(ratio: dict[str, Any], name: str) -> str:
    """An ingest ratio's median and each round's value."""
    return _median_and_rounds(ratio[name], [r[name] for r in ratio["rounds"] if name in r])


def batch_line(summary: dict[str, Any]) -> str:
    """`/v1/batch`'s figure (bench/summary.py), its median and each round's ratio."""
    each = [r["ratio"] for r in summary["batch_ratio_rounds"]]
    return (
        f"  /v1/batch events/s / identify 202/s at the same count, median of {len(each)} round(s) "
        f"[each round]: {_median_and_rounds(summary['batch_ratio'], each)}"
    )


def report(results: dict[str, Any]) -> str:
    meta, cfg, summary = results["meta"], results["config"], results.get("summary", {})
    lines = [
        "",
        f"Tributary bench {meta['started_at']}: {meta['cpus']} CPUs ({meta['cpu_model']}), commit "
        f"{meta['git_commit'][:10]}{' + uncommitted changes' if meta['git_dirty'] else ''}",
    ]
    ingest: list[dict[str, Any]] = results["ingest"]
    if ingest:
        lines += [
            "",
            "(a) POST /v1/identify under the shipped gunicorn configuration (app/gunicorn_conf.py, "
            f"gthread; both apps); wrk {cfg['wrk_threads']} threads, {cfg['warmup']} s warmup + "
            f"{cfg['duration']} s per point",
        ]
        rows = [
            ["app", "conns", "round", "req/s", "202/s", "p50 ms", "p99 ms", "non-2xx", "sock err", "stored"]
        ]
        for p in ingest:
            rows.append(
                [
                    p["label"],
                    str(p["connections"]),
                    str(p.get("round", 0) + 1),
                    f"{p['requests_per_s']:.0f}",
                    f"{p['accepted_per_s']:.0f}",
                    f"{p['p50_ms']:.1f}",
                    f"{p['p99_ms']:.1f}",
                    str(p["non_2xx"]),
                    str(sum(p["socket_errors"].values())),
                    "-" if p["events_stored"] is None else str(p["events_stored"]),
                ]
            )
        lines += _table(rows)
        for c, ratio in summary.get("ingest_ratio", {}).items():
            lines.append(
                f"  Tributary / bare at {c} connections, median of {len(ratio['rounds'])} round(s) "
                f"[each round]: {_rounds(ratio, 'limiter_off')} with rate limiting off, "
                f"{_rounds(ratio, 'default_limiter')} with the default limiter (202s); by CPU per "
                f"request {_rounds(ratio, 'limiter_off_by_cpu')}"
                + (
                    f"; Stripe webhook {_rounds(ratio, 'stripe_webhook')}"
                    if "stripe_webhook" in ratio
                    else ""
                )
            )
        if "batch_ratio_rounds" in summary:
            lines.append(batch_line(summary))
        lines += ["", "    CPU per request (ms) and the machine's load during each point (2 CPUs = 100%)"]
        rows = [
            [
                "app",
                "conns",
                "round",
                "web",
                "postgres",
                "pg shared",
                "redis",
                "wrk",
                "ours",
                "other load",
                "steal",
            ]
        ]
        for p in ingest:
            cpu, per = p["cpu_s"], p["cpu_ms_per_request"]
            ours = cpu["machine busy"] - cpu["other"] - cpu.get("steal", 0.0)
            rows.append(
                [
                    p["label"],
                    str(p["connections"]),
                    str(p.get("round", 0) + 1),
                    f"{per.get('web', 0):.3f}",
                    f"{per.get('postgres', 0):.3f}",
                    f"{per.get('pg shared', 0):.3f}",
                    f"{per.get('redis', 0):.3f}",
                    f"{per.get('wrk', 0):.3f}",
                    f"{ours / max(1e-9, cpu['machine capacity']):.0%}",
                    _share(cpu, "other"),
                    _share(cpu, "steal"),
                ]
            )
        lines += _table(rows)
    breakdown: dict[str, dict[str, dict[str, float]]] = results.get("breakdown") or {}
    if breakdown:
        off, on = breakdown["limiter_off"], breakdown["limiter_on"]
        lines += [
            "",
            "    where identify's time goes in the web process: microseconds per request, each step timed in",
            "    place (bench/breakdown.py: Flask test client, one process, no HTTP server)",
        ]
        rows = [["step", "CPU us", "wall us", "with limiter: CPU", "wall"]]
        for step, t in off.items():
            o = on.get(step, {"cpu_us": 0.0, "wall_us": 0.0})
            cells = [f"{t['cpu_us']:.0f}", f"{t['wall_us']:.0f}", f"{o['cpu_us']:.0f}", f"{o['wall_us']:.0f}"]
            rows.append([step, *cells])
        lines += _table(rows)
    drain: list[dict[str, Any]] = results["drain"]
    noop = results.get("noop")
    if drain or noop:
        lines += [
            "",
            f"(b) drain on PostgreSQL: {cfg['events']:,} identify events (distinct emails) stored pending,"
            f" then applied by `tributary worker` processes; TRIBUTARY_BATCH_SIZE={cfg['batch_size']}",
        ]
        rows = [
            [
                "run",
                "rate/s",
                "seconds",
                "result",
                "jobs/worker",
                "CPU ms: worker",
                "pg",
                "pg shared",
                "other load",
            ]
        ]
        for d in drain:
            per = d["cpu_ms_per_event"]
            rows.append(
                [
                    f"{d['workers']} worker{'s' if d['workers'] > 1 else ''} (events/s)",
                    f"{d['events_per_s']:.0f}",
                    f"{d['seconds']:.2f}",
                    ", ".join(f"{n} {s}" for s, n in sorted(d["statuses"].items()))
                    + f"; {d['customers']} customers",
                    "/".join(map(str, d["drain_jobs_per_worker"])),
                    f"{sum(v for k, v in per.items() if k.startswith('worker')):.3f}",
                    f"{per.get('postgres', 0):.3f}",
                    f"{per.get('pg shared', 0):.3f}",
                    _share(d["cpu_s"], "other"),
                ]
            )
        if noop:
            rows.append(
                [
                    "RQ no-op jobs, 1 worker (jobs/s)",
                    f"{noop['jobs_per_s']:.0f}",
                    f"{noop['seconds']:.2f}",
                    f"{noop['jobs_ok']} ok, {noop['failed']} failed",
                    "",
                    f"{noop['cpu_ms_per_job'].get('worker', 0):.3f}",
                    f"redis {noop['cpu_ms_per_job'].get('redis', 0):.3f}",
                    "",
                    _share(noop["cpu_s"], "other"),
                ]
            )
        lines += _table(rows, left=(0, 3, 4))
    lines += ["", "(c) peak RSS (VmHWM, MiB), per process and summed per role"]
    for server in results["servers"]:
        lines.append(_rss_line(f"web: {server['label']}", server["peak_rss_kib"]))
    for d in drain:
        lines.append(_rss_line(f"worker processes, {d['workers']}-worker run", d["peak_rss_kib"]))
    if noop:
        lines.append(_rss_line("no-op worker", noop["peak_rss_kib"]))
    for g in results.get("memory_by_batch") or []:
        lines.append(_rss_line(f"1 worker, TRIBUTARY_BATCH_SIZE={g['batch_size']}", g["peak_rss_kib"]))
    lines += extra_sections(results)
    lines += ["", "Summary: every figure of issue #10 against its target"]
    lines += targets_table(summary)
    lines.append("")
    return "\n".join(lines)


# The sustained table's CPU split (sustained.py `cpu_split`): role in the JSON, column label.
SUSTAINED_CPU_COLUMNS = (
    ("web", "web"),
    ("workers", "workers"),
    ("postgres", "postgres"),
    ("load generator", "load gen"),
    ("other", "other"),
    ("steal", "steal"),
    ("machine busy", "busy"),
)


def _cpus(split: dict[str, float], role: str) -> str:
    return f"{split[role]:.2f}" if role in split else "-"


def extra_sections(results: dict[str, Any]) -> list[str]:
    """Sustained load, read side and the embedded default, briefly (all figures are in the JSON)."""
    lines: list[str] = []
    if sustained := results.get("sustained"):
        lines += [
            "",
            "(d) sustained end to end, web + 2 workers, open-loop Stripe webhooks, "
            f"{sustained['window_s']} s per rate",
        ]
        rows = [
            [
                "offered/s",
                "answered 2xx/s",
                "backlog start",
                "end",
                "slope/s",
                "p99 ms",
                "send lag p99",
                "flat",
                *(f"CPUs {label}" for _, label in SUSTAINED_CPU_COLUMNS),
                "CPUs bare Flask web",
            ]
        ]
        bare = sustained.get("bare") or {}
        for step in sustained["steps"]:
            rows.append(
                [
                    str(step["rate"]),
                    f"{step['accepted_per_s']:.0f}",
                    str(step["backlog_first"]),
                    str(step["backlog_last"]),
                    f"{step['backlog_slope']:.1f}",
                    f"{step['load']['latency_ms'].get('p99', 0):.0f}",
                    f"{step['load']['send_lag_ms'].get('p99', 0):.0f}",
                    "yes" if step["flat"] else "no",
                    *(_cpus(step.get("cpu_cpus") or {}, role) for role, _ in SUSTAINED_CPU_COLUMNS),
                    _cpus((bare.get(str(step["rate"])) or {}).get("cpu_cpus") or {}, "web"),
                ]
            )
        lines += _table(rows)
        if bare:
            lines.append(
                "  CPUs bare Flask web: bench/bare_app.py under the same gunicorn configuration, offered the "
                "same webhooks at that rate (the stack's own cost)"
            )
        vis = sustained.get("visible") or {}
        lines.append(
            f"  webhook POST -> visible through GET /v1/customers/<email> at {sustained['latency_rate']}/s: "
            f"p50 {vis.get('p50', '-')} ms, p95 {vis.get('p95', '-')} ms over {vis.get('count', 0)} events"
        )
    if read := results.get("readside"):
        lines += [
            "",
            f"(e) read side: GET /v1/customers, {read['customers']:,} customers in 3 projects (PostgreSQL)",
        ]
        rows = [["family", "p50 ms", "p95 ms", "rows", "index in plan", "DB execution ms"]]
        for f in read["families"]:
            uses = {True: "yes", False: "NO", None: "-"}[f.get("plan_uses_index")]
            db = "-" if f.get("db_execution_ms") is None else f"{f['db_execution_ms']:.2f}"
            rows.append([f["family"], f"{f['p50_ms']:.1f}", f"{f['p95_ms']:.1f}", str(f["rows"]), uses, db])
        lines += _table(rows)
    if emb := results.get("embedded"):
        lines += [
            "",
            "(f) embedded default: `tributary serve` (SQLite + embedded Redis), its own server config",
        ]
        rows = [["app", "conns", "202/s", "p50 ms", "p99 ms", "non-2xx"]]
        for p in emb["ingest"]:
            rows.append(
                [
                    p["label"],
                    str(p["connections"]),
                    f"{p['accepted_per_s']:.0f}",
                    f"{p['p50_ms']:.1f}",
                    f"{p['p99_ms']:.1f}",
                    str(p["non_2xx"]),
                ]
            )
        lines += _table(rows)
        for c, each in emb.get("ingest_ratio_rounds", {}).items():
            lines.append(
                f"  serve / bare at {c} connections: {emb['ingest_ratio'][c]:.2f} "
                f"[each round: {' '.join(f'{x:.2f}' for x in each)}]"
            )
        if emb.get("drain_events_per_s"):
            lines.append(
                f"  drain by serve's worker: {emb['drain_events']} events in {emb['drain_seconds']:.2f} s = "
                f"{emb['drain_events_per_s']:.0f} events/s"
            )
    return lines


def _meta() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                cmd, capture_output=True, text=True, cwd=REPO, timeout=10, check=False
            ).stdout.strip()
        return ""

    from importlib.metadata import version

    packages = ("flask", "gunicorn", "sqlalchemy", "psycopg", "pydantic", "rq", "redis", "limits")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "",
    )
    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": out("git", "rev-parse", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "cpus": NCPU,
        "cpu_model": model,
        "memory_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "wrk": out("wrk", "--version").splitlines()[0] if out("wrk", "--version") else "",
    }
