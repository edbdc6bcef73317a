"""Every figure of issue #10 against its target, from one run's results: `summary` in latest.json.

Today's keys (ingest_ratio, ingest_target_met, drain_ratio, drain_target_met, drain_scaling) keep
their names; `targets` lists every figure with its target and whether this run met it (None: the
figure is informational, or its phase did not run).
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.p99_bound import p99_bound
from bench.targets import Targets

ROLES = ("web", "postgres", "redis", "wrk")
P99_TARGET_MS = 50
MIB = 1024


def _cpu_per_request(point: dict[str, Any]) -> float:
    """CPU ms one request costs the web server, PostgreSQL, Redis and wrk together."""
    return float(sum(point["cpu_ms_per_request"].get(role, 0.0) for role in ROLES))


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _median_of(rounds: dict[int, dict[str, Any]], name: str) -> float:
    """The median over a point's rounds of one of its figures."""
    return round(float(statistics.median(p[name] for p in rounds.values())), 3)


# A point's key: (app, connections); its round is `round` (bench/ingest.py measures in rounds).
Points = dict[tuple[str, int], dict[int, dict[str, Any]]]


def _by_round(points: list[dict[str, Any]]) -> Points:
    by: Points = {}
    for p in points:
        by.setdefault((p["app"], p["connections"]), {})[p.get("round", 0)] = p
    return by


def _round_ratios(by: Points, c: int, r: int) -> dict[str, float] | None:
    """Round `r`'s ratios at `c` connections, each from that round's own bare Flask point; None
    when the round lacks bare Flask or either identify server."""
    bare = by.get(("bare", c), {}).get(r)
    off = by.get(("tributary", c), {}).get(r)
    limited = by.get(("tributary-limiter", c), {}).get(r)
    if bare is None or off is None or limited is None:
        return None
    ratios = {
        "limiter_off": _ratio(off["accepted_per_s"], bare["accepted_per_s"]),
        "default_limiter": _ratio(limited["accepted_per_s"], bare["accepted_per_s"]),
        # The machine is CPU-bound and shared: throughput follows the CPU that one request costs
        # all our processes together, a ratio that other load on the machine barely moves.
        "limiter_off_by_cpu": _ratio(_cpu_per_request(bare), _cpu_per_request(off)),
        "default_limiter_by_cpu": _ratio(_cpu_per_request(bare), _cpu_per_request(limited)),
        "limiter_cost": round(1 - _ratio(limited["accepted_per_s"], off["accepted_per_s"]), 3),
    }
    if (one_key := by.get(("tributary-limiter-1key", c), {}).get(r)) is not None:
        # Capped by design: one key is refused above its configured rate (1000/s by default).
        ratios["default_one_key"] = _ratio(one_key["accepted_per_s"], bare["accepted_per_s"])
    if (stripe := by.get(("tributary-stripe", c), {}).get(r)) is not None:
        ratios["stripe_webhook"] = _ratio(stripe["accepted_per_s"], bare["accepted_per_s"])
    return ratios


def _ingest_entry(by: Points, c: int) -> dict[str, Any] | None:
    """The ratios at `c` connections: each the median of its rounds' values, with every round's
    values under `rounds` (a figure measured once is that one value)."""
    rounds = [found for r in sorted(by.get(("bare", c), {})) if (found := _round_ratios(by, c, r))]
    if not rounds:
        return None
    names = dict.fromkeys(name for ratios in rounds for name in ratios)
    entry: dict[str, Any] = {
        name: round(statistics.median(x[name] for x in rounds if name in x), 3) for name in names
    }
    entry["rounds"] = rounds
    return entry


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"ingest_ratio": {}}
    targets = Targets()
    by = _by_round(results.get("ingest", []))
    default_ratios = []
    for c in sorted({c for (app, c) in by if app == "bare"}):
        entry = _ingest_entry(by, c)
        if entry is None:
            continue
        summary["ingest_ratio"][str(c)] = entry
        default_ratios.append(entry["default_limiter"])
        targets.add(
            "1", f"identify / bare Flask, default config, {c} conns", entry["default_limiter"], ">=", 0.5
        )
        targets.add("1", f"limiter cost (1 - on/off), {c} conns", entry["limiter_cost"], "<=", 0.10)
        if "default_one_key" in entry:
            figure = f"identify / bare, default config, ONE key (its limit caps it), {c} conns"
            targets.add("1", figure, entry["default_one_key"], "", None)
        if "stripe_webhook" in entry:
            targets.add("2", f"Stripe webhook / bare Flask, {c} conns", entry["stripe_webhook"], ">=", 0.35)
    if default_ratios:
        # The target is the default configuration (limiter on), as shipped.
        summary["ingest_target_met"] = min(default_ratios) >= 0.5
    _p99(by, summary, targets)
    _limiter(results, by, summary, targets)
    _batch(results, by, summary, targets)
    _drain(results, summary, targets)
    _sustained(results, summary, targets)
    _readside(results, summary, targets)
    _embedded(results, summary, targets)
    _memory(results, summary, targets)
    summary["targets"] = sorted(targets.rows, key=lambda row: row["item"])  # stable: phase order within
    checked = [row["met"] for row in targets.rows if row["met"] is not None]
    summary["targets_met"] = f"{sum(checked)} of {len(checked)}"
    return summary


def _p99(by: Points, summary: dict[str, Any], targets: Targets) -> None:
    """identify's p99 at the most connections, and beside it what bounds it (bench/p99_bound.py):
    the rate a p99 within the target needs, over bare Flask's own."""
    top = max((c for (app, c) in by if app == "tributary-limiter"), default=None)
    if top is None:
        return
    ours = by[("tributary-limiter", top)]
    p99 = _median_of(ours, "p99_ms")
    summary["ingest_p99_ms_at_max_connections"] = p99
    targets.add("1", f"identify p99 at {top} conns, default config", p99, "<=", P99_TARGET_MS, "ms")
    bound = p99_bound(ours, by.get(("bare", top), {}), top, P99_TARGET_MS)
    if bound is None:
        return
    summary["ingest_p99_bound"] = bound
    targets.add("1", f"bare Flask's own p99 at {top} conns", bound["bare_p99_ms"], "", None, "ms")
    for name, label in (("tributary", "identify's"), ("bare", "bare Flask's")):
        figure = f"rate a {P99_TARGET_MS} ms p99 needs / bare Flask's, at {label} tail, {top} conns"
        targets.add("1", figure, bound["rate_needed_over_bare"][name], "", None, "x")


def _limiter(results: dict[str, Any], by: Points, summary: dict[str, Any], targets: Targets) -> None:
    check = results.get("limiter_check")
    if not check:
        return
    # Closed-loop points count too: a 429 in a point whose rate per key, every answer counted (what
    # the key sent), stayed below the limit. (Not the accepted rate: a key sending 1,014/s against
    # 1,000/s has some refused, and its accepted rate then falls below the limit, rightly.)
    keys = {"tributary-limiter": results.get("ingest_keys", 1), "tributary-limiter-1key": 1}
    below = sum(
        p["non_2xx"]
        for (app, _), rounds in by.items()
        for p in rounds.values()
        if app in keys and p["requests_per_s"] / keys[app] < check["per_second"]
    )
    summary["limiter_refusals_below_rate"] = {"open_loop": check["refused_429"], "closed_loop_points": below}
    targets.add(
        "1",
        f"429s at {check['offered_per_s']}/s open-loop ({check['configured']})",
        check["refused_429"],
        "<=",
        0,
    )
    targets.add("1", "429s in identify points below the limit", below, "<=", 0)


def _batch(results: dict[str, Any], by: Points, summary: dict[str, Any], targets: Targets) -> None:
    """`/v1/batch`'s events/s over identify's requests/s at the same count, each round's batch
    point over that round's identify point (bench/ingest.py), the median of the rounds' ratios."""
    found = next(((c, rounds) for (app, c), rounds in by.items() if app == "tributary-batch"), None)
    if found is None:
        return
    connections, batches = found
    single = by.get(("tributary-limiter", connections), {})
    messages = results["config"]["batch_messages"]
    rounds = []
    for r, batch in sorted(batches.items()):
        if r in single:
            events, identify = batch["accepted_per_s"] * messages, single[r]["accepted_per_s"]
            rounds.append(
                {
                    "events_per_s": round(events, 1),
                    "identify_per_s": identify,
                    "ratio": _ratio(events, identify),
                }
            )
    if not rounds:
        return
    summary["batch_events_per_s"] = round(float(statistics.median(x["events_per_s"] for x in rounds)), 1)
    summary["batch_ratio"] = round(float(statistics.median(x["ratio"] for x in rounds)), 3)
    summary["batch_ratio_rounds"] = rounds
    targets.add("3", f"/v1/batch ({messages}/req) events/s / identify", summary["batch_ratio"], ">=", 10)


def _drain(results: dict[str, Any], summary: dict[str, Any], targets: Targets) -> None:
    drain, noop = results.get("drain") or [], results.get("noop")
    two = next((d for d in drain if d["workers"] == 2), None)
    one = next((d for d in drain if d["workers"] == 1), None)
    if two and noop:
        summary["drain_ratio"] = round(two["events_per_s"] / noop["jobs_per_s"], 2)
        summary["drain_target_met"] = summary["drain_ratio"] >= 25
        targets.add("4", "drain, 2 workers / RQ no-op job rate", summary["drain_ratio"], ">=", 25, "x")
    if two and one:
        summary["drain_scaling"] = round(two["events_per_s"] / one["events_per_s"], 2)
        targets.add("4", "drain, 2 workers / 1 worker", summary["drain_scaling"], ">=", 1.7, "x")


def _sustained(results: dict[str, Any], summary: dict[str, Any], targets: Targets) -> None:
    sustained = results.get("sustained")
    if not sustained:
        return
    summary["sustained_max_flat_rate"] = sustained["max_flat_rate"]
    summary["visible_p95_ms"] = sustained["visible_p95_ms"]
    window = sustained["window_s"]
    targets.add(
        "5",
        f"highest open-loop rate with a flat backlog ({window} s)",
        sustained["max_flat_rate"],
        ">=",
        1500,
        "events/s",
    )
    targets.add(
        "5",
        f"webhook POST -> visible p95 at {sustained['latency_rate']}/s",
        sustained["visible_p95_ms"],
        "<=",
        250,
        "ms",
    )
    # Context, no target: at the first rate that was not flat, how much of the machine the web
    # stack alone (bare Flask, same server settings, same load) took, and how much Tributary's web.
    bare = sustained.get("bare") or {}
    missed = next((s for s in sustained["steps"] if not s["flat"]), None)
    if missed is not None and (base := (bare.get(str(missed["rate"])) or {}).get("cpu_cpus")):
        web = (missed.get("cpu_cpus") or {}).get("web")
        summary["sustained_web_cpus_vs_bare"] = {
            "rate": missed["rate"],
            "web": web,
            "bare_web": base.get("web"),
        }
        targets.add("5", f"web CPUs at {missed['rate']}/s (not flat): Tributary", web, "", None, "CPUs")
        targets.add(
            "5", f"web CPUs at {missed['rate']}/s: bare Flask alone", base.get("web"), "", None, "CPUs"
        )


def _readside(results: dict[str, Any], summary: dict[str, Any], targets: Targets) -> None:
    read = results.get("readside")
    if not read:
        return
    summary["read_p95_ms"] = {f["family"]: f["p95_ms"] for f in read["families"]}
    n = read["customers"]
    for family in read["families"]:
        targets.add(
            "6",
            f"GET /v1/customers {family['family']} p95 ({n:,} customers)",
            family["p95_ms"],
            "<=",
            50,
            "ms",
        )
        if family.get("plan_uses_index") is not None:
            targets.add("6", f"index in the plan: {family['family']}", family["plan_uses_index"], "is", True)


def _embedded(results: dict[str, Any], summary: dict[str, Any], targets: Targets) -> None:
    emb = results.get("embedded")
    if not emb:
        return
    summary["embedded"] = {
        "ingest_ratio": emb["ingest_ratio"],
        "drain_events_per_s": emb.get("drain_events_per_s"),
    }
    if "ingest_ratio_rounds" in emb:  # each round's ratio; `ingest_ratio` is their median
        summary["embedded"]["ingest_ratio_rounds"] = emb["ingest_ratio_rounds"]
    for c, ratio in emb["ingest_ratio"].items():
        targets.add("7", f"serve: identify / bare Flask (serve's config), {c} conns", ratio, ">=", 0.5)
    _embedded_cpu(emb, summary["embedded"], targets)
    noop = results.get("noop")
    if emb.get("drain_events_per_s") and noop:
        ratio = round(emb["drain_events_per_s"] / noop["jobs_per_s"], 2)
        summary["embedded"]["drain_ratio"] = ratio
        targets.add("7", "serve: drain (its 1 worker, SQLite) / RQ no-op rate", ratio, "", None, "x")


def _idle_share(point: dict[str, Any]) -> float:
    cpu = point["cpu_s"]
    capacity = cpu.get("machine capacity", 0.0)
    return round(1 - cpu.get("machine busy", 0.0) / capacity, 3) if capacity else 0.0


def _embedded_cpu(emb: dict[str, Any], out: dict[str, Any], targets: Targets) -> None:
    """Why serve's ratio is what it is: what a request costs the machine beside bare Flask's (serve's
    web, its worker and its Redis, all in serve's process tree; wrk for both), and how much of the
    machine stood idle while serve was measured. On a machine with no idle time left the ratio can
    reach the CPU one at most. The idle time comes with serve's worker: stopped, it leaves about as
    much as bare Flask does (bench/README.md, 2026-12-06 09:20), and the scheduler's record puts
    most of the difference where the worker's batch holds SQLite's write lock (bench/schedule.py):
    the share of the idle time that fell while the worker ran, when `perf` could record it."""
    by = _by_round([p for p in emb.get("ingest", []) if "cpu_s" in p])
    out["by_cpu"], out["idle"] = {}, {}
    for c in sorted({c for (app, c) in by if app == "serve"}):
        # Each round's pair, then the median over the rounds (one round: its values).
        pairs = [
            (serve, bare)
            for r, serve in sorted(by[("serve", c)].items())
            if (bare := by.get(("bare-serve", c), {}).get(r)) is not None
        ]
        if not pairs:
            continue
        by_cpu = round(
            statistics.median(
                _ratio(_cpu_per_request(bare), _cpu_per_request(serve)) for serve, bare in pairs
            ),
            3,
        )
        idle = {
            "serve": round(statistics.median(_idle_share(serve) for serve, _ in pairs), 3),
            "bare": round(statistics.median(_idle_share(bare) for _, bare in pairs), 3),
        }
        out["by_cpu"][str(c)], out["idle"][str(c)] = by_cpu, idle
        targets.add("7", f"serve: identify / bare by CPU per request, {c} conns", by_cpu, "", None)
        targets.add(
            "7",
            f"serve: machine idle while serve ran, {c} conns",
            round(100 * idle["serve"], 1),
            "",
            None,
            "%",
        )
    for c, found in sorted(emb.get("schedule", {}).items(), key=lambda item: int(item[0])):
        if found:
            out.setdefault("schedule", {})[c] = found
            share = round(100 * found["idle_beside_worker"], 1)
            targets.add("7", f"serve: of that idle time, beside its worker, {c} conns", share, "", None, "%")


def _memory(results: dict[str, Any], summary: dict[str, Any], targets: Targets) -> None:
    web = [
        kib
        for server in results.get("servers", [])
        if server["name"].startswith("tributary")
        for name, kib in server["peak_rss_kib"].items()
        if name != "master"
    ]
    if web:
        summary["web_worker_peak_rss_mib"] = round(max(web) / MIB, 1)
        targets.add("8", "web worker peak RSS (VmHWM)", summary["web_worker_peak_rss_mib"], "<=", 120, "MiB")
    workers = [
        kib
        for d in results.get("drain", [])
        for name, kib in d["peak_rss_kib"].items()
        if "scheduler" not in name
    ]
    if workers:
        summary["worker_peak_rss_mib"] = round(max(workers) / MIB, 1)
        targets.add(
            "8", "worker peak RSS (VmHWM), drain runs", summary["worker_peak_rss_mib"], "<=", 150, "MiB"
        )
    growth = results.get("memory_by_batch")
    if growth:
        summary["worker_rss_by_batch_size_mib"] = {
            str(g["batch_size"]): g["worker_peak_rss_mib"] for g in growth
        }
        for g in growth:
            targets.add(
                "8",
                f"worker peak RSS at batch size {g['batch_size']}",
                g["worker_peak_rss_mib"],
                "<=",
                150,
                "MiB",
            )
