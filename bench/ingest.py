"""Ingest in the default configuration: `POST /v1/identify` under the shipped gunicorn configuration
beside bare Flask under the same, at every connection count, with the rate limiter as shipped and
off; then (bench/ingest_kinds.py) the Stripe webhook, `/v1/batch` and the limiter's refusals."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from bench.constants import BARE_APP, BREAKDOWN_MODULE, INGEST_KEYS, WSGI_APP
from bench.harness import REPO, Environment, Processes, log
from bench.ingest_kinds import StripeTraffic, measure_batch, measure_limiter
from bench.options import Config
from bench.servers import Server, start_server
from bench.wrk import IngestPoint, Target, measure_ingest


def measure_breakdown(
    env: Environment, token: str, calls: int = 3000
) -> dict[str, dict[str, dict[str, float]]]:
    """bench/breakdown.py in child processes: identify's steps timed in place, inside requests
    served by Flask's test client, with rate limiting off and with a limiter. It reaches into
    app/fast_path.py and the ingest view's internals (its steps), so it is the one part of the
    bench a rewrite of either can break; run.py records that failure and goes on."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant, args in (("limiter_off", []), ("limiter_on", ["limited"])):
        result = subprocess.run(
            [sys.executable, "-m", BREAKDOWN_MODULE, *args],
            env=env.env(BENCH_API_KEY=token, TRIBUTARY_RATE_LIMIT="off", BENCH_BREAKDOWN_CALLS=str(calls)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bench/breakdown.py failed:\n{result.stdout}\n{result.stderr}")
        out[variant] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def ingest_phase(
    wrk: str, cfg: Config, env: Environment, procs: Processes, token: str, results: dict[str, Any]
) -> tuple[Server, list[IngestPoint]]:
    """Start the three servers, measure each at every connection count, then the other ingest kinds
    on the default server; stop all but that one (the drain phase stores its events through it)."""
    default_label = "Tributary, default (limiter on)"
    if not cfg.runs("ingest"):
        server = start_server(
            procs, "tributary-limiter", default_label, WSGI_APP, env.env(), cfg.web_workers, token
        )
        return server, []
    apps = [
        ("bare", "bare Flask (bench/bare_app.py)", BARE_APP, env.env()),
        ("tributary-limiter", f"{default_label}, {INGEST_KEYS} keys", WSGI_APP, env.env()),
        (
            "tributary",
            f"Tributary, rate limit off, {INGEST_KEYS} keys",
            WSGI_APP,
            env.env(TRIBUTARY_RATE_LIMIT="off"),
        ),
    ]
    servers = [
        start_server(procs, name, label, app, app_env, cfg.web_workers, token)
        for name, label, app, app_env in apps
    ]
    # The default configuration is measured with its traffic spread over several keys, as several
    # apps or SDKs send it: its rate limit is per key (1000/s by default), and one key alone is
    # refused above that rate by design, which would measure the configured limit, not the
    # product. The one-key figure is measured too, and reported beside it.
    keys = [token] + [env.create_key("ingest") for _ in range(INGEST_KEYS - 1)]
    results["ingest_keys"] = INGEST_KEYS
    spread = Target(env={"BENCH_API_KEYS": ",".join(keys)})
    default = next(s for s in servers if s.name == "tributary-limiter")
    one_key = ("tributary-limiter-1key", "Tributary, default, one key")
    stripe = StripeTraffic(wrk, cfg, env, default, token)
    run_ids = itertools.count()
    points: list[IngestPoint] = []
    # The ratio points are measured in rounds, bare Flask and Tributary one after the other in each:
    # one point here can differ by 40 % from the same server's next point a minute later, so a
    # figure is the median of ratios each taken within one round (summary.py; bench/README.md,
    # "Rounds"). The one-key point is informational and measured in the first round only. The
    # Stripe webhook and `/v1/batch` (at the first count) are measured in every round too, each set
    # beside its own round's points: a batch point measured once, after the rounds, was set against
    # identify's median and missed its target by one slow point (bench/README.md, 2026-12-07).
    for round_no in range(cfg.rounds):
        for connections in cfg.connections:
            # Both Tributary servers get the same traffic, so the limiter's cost (on / off) compares
            # like with like: before, the server without it was sent one key's requests.
            runs: list[tuple[Server, Target | None, tuple[str, str] | None]] = [
                (server, None if server.name == "bare" else spread, None) for server in servers
            ]
            if round_no == 0:
                runs.append((default, None, one_key))
            for server, target, app in runs:
                label = app[1] if app else server.label
                log(f"ingest: {label}, {connections} connections, round {round_no + 1} of {cfg.rounds}")
                point = measure_ingest(
                    wrk, cfg, env, server, token, connections, run_ids, target, app, round_no
                )
                points.append(point)
                results["ingest"].append(asdict(point))
                log(
                    f"  {point.requests_per_s:.0f} req/s ({point.accepted_per_s:.0f} accepted), "
                    f"p50 {point.p50_ms} ms, p99 {point.p99_ms} ms"
                )
            points.append(stripe.point(connections, run_ids, results, round_no))
            if connections == cfg.connections[0]:
                points.append(measure_batch(wrk, cfg, env, default, token, run_ids, results, round_no))
    results["limiter_check"] = measure_limiter(cfg, env, procs, default, token)
    for server in servers:
        if server is not default:
            server.record_peak_rss()
            results["servers"].append(
                {"name": server.name, "label": server.label, "peak_rss_kib": server.peak_rss_kib}
            )
            procs.stop(server.proc)
    return default, points
