"""Ingest beyond identify, on the default server: the signed Stripe webhook, `/v1/batch` with 100
messages per request, and whether the rate limiter refuses a key that stays below its rate."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.constants import SETTINGS, product
from bench.harness import BENCH, Environment, Processes, log, run_cli
from bench.loadgen import build, run_open_loop
from bench.options import Config
from bench.servers import Server
from bench.wrk import IngestPoint, Target, measure_ingest

STRIPE_SECRET = "whsec_bench_stripe_signing_secret"


def create_stripe_source(env: Environment) -> str:
    """A `stripe` source (its webhook path is /webhooks/<id>)."""
    created = json.loads(
        run_cli(env.env(), "sources", "create", "--connector", "stripe", "--secret", STRIPE_SECRET, "--json")
    )
    source_id: str = created["id"]
    return source_id


def write_stripe_deliveries(path: Path, count: int, run_id: str) -> None:
    """`count` distinct `customer.created` events, signed now, one "<signature>\t<body>" per line."""
    spec = {"kind": "stripe", "prefix": f"stripe{run_id}", "secret": STRIPE_SECRET, "path": ""}
    with path.open("w") as out:
        for i in range(count):
            _, headers, body, _ = build(spec, i)
            out.write(f"{headers['Stripe-Signature']}\t{body.decode()}\n")


class StripeTraffic:
    """Signed Stripe webhooks for the default server: one `stripe` source, and a fresh file of
    distinct, newly signed `customer.created` deliveries for each point (`point`)."""

    def __init__(self, wrk: str, cfg: Config, env: Environment, server: Server, token: str) -> None:
        self.wrk, self.cfg, self.env, self.server, self.token = wrk, cfg, env, server, token
        self.source = create_stripe_source(env)

    def point(
        self, connections: int, run_ids: Iterator[int], results: dict[str, Any], round_no: int = 0
    ) -> IngestPoint:
        """Stripe webhook ingest at `connections`: signature verified by the product, one event per
        delivery, each stored before the 200."""
        cfg = self.cfg
        label = "Tributary, Stripe webhook"
        log(f"ingest: {label}, {connections} connections")
        with tempfile.TemporaryDirectory() as tmp:
            deliveries = Path(tmp) / "stripe.tsv"
            # Two halves (warmup, measured; see stripe.lua), each several times what a point sends;
            # signed now, well inside Stripe's 300 s tolerance.
            write_stripe_deliveries(deliveries, 4000 * max(cfg.warmup, cfg.duration), str(next(run_ids)))
            target = Target(
                script=BENCH / "stripe.lua",
                path=f"/webhooks/{self.source}",
                env={"BENCH_STRIPE_FILE": str(deliveries)},
            )
            point = measure_ingest(
                self.wrk,
                cfg,
                self.env,
                self.server,
                self.token,
                connections,
                run_ids,
                target,
                ("tributary-stripe", label),
                round_no,
            )
        results["ingest"].append(asdict(point))
        log(f"  {point.requests_per_s:.0f} req/s, p50 {point.p50_ms} ms, p99 {point.p99_ms} ms")
        return point


def measure_batch(
    wrk: str,
    cfg: Config,
    env: Environment,
    server: Server,
    token: str,
    run_ids: Iterator[int],
    results: dict[str, Any],
    round_no: int = 0,
) -> IngestPoint:
    """`POST /v1/batch`, `batch_messages` identify messages per request (each a new email with its
    own message_id), at the first connection count, on the default server (limiter on: it counts
    requests, so a batch is one hit). Measured in each round, after that round's identify points,
    and set beside them (bench/summary.py)."""
    connections = cfg.connections[0]
    label = f"Tributary, /v1/batch ({cfg.batch_messages}/request)"
    log(f"ingest: {label}, {connections} connections, round {round_no + 1} of {cfg.rounds}")
    target = Target(
        script=BENCH / "batch.lua", path="/v1/batch", env={"BENCH_BATCH": str(cfg.batch_messages)}
    )
    point = measure_ingest(
        wrk, cfg, env, server, token, connections, run_ids, target, ("tributary-batch", label), round_no
    )
    results["ingest"].append(asdict(point))
    log(
        f"  {point.requests_per_s:.0f} req/s = {point.accepted_per_s * cfg.batch_messages:.0f} events/s, "
        f"p50 {point.p50_ms} ms, p99 {point.p99_ms} ms"
    )
    return point


def configured_rate() -> tuple[str, float]:
    """The shipped default limit (`Settings.rate_limit`) and its tightest rate in requests per second."""
    from limits import parse_many

    spec = str(product(SETTINGS).rate_limit)
    rates = [item.amount / item.get_expiry() for item in parse_many(spec)]
    return spec, min(rates)


def measure_limiter(
    cfg: Config, env: Environment, procs: Processes, server: Server, token: str, share: float = 0.9
) -> dict[str, Any]:
    """One key sending identify open-loop at `share` of the configured rate: every 429 is a refusal
    below the rate. (The closed-loop points count theirs too; summary.py reads both.)"""
    spec, per_second = configured_rate()
    rate = round(share * per_second)
    seconds = 3 if cfg.quick else max(5, cfg.duration)
    log(f"limiter: one key at {rate}/s open-loop for {seconds} s (configured {spec})")
    result = run_open_loop(
        procs,
        "limiter-check",
        {
            "port": server.port,
            "rate": rate,
            "duration": seconds,
            "kind": "identify",
            "token": token,
            "prefix": "limiter",
        },
    )
    refused = int(result["statuses"].get("429", 0))
    log(f"  {refused} refused (429) of {result['scheduled']}; answers {result['statuses']}")
    return {
        "configured": spec,
        "per_second": per_second,
        "offered_per_s": rate,
        "seconds": seconds,
        "refused_429": refused,
        "load": result,
    }
