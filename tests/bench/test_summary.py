"""The bench's summary of ingest rounds (bench/summary.py): each ratio is taken within one round and
a figure is the median of its rounds, so one disturbed point cannot decide a target."""

from __future__ import annotations

from typing import Any

from bench.report import batch_line
from bench.summary import summarize


def point(app: str, connections: int, accepted: float, *, round_no: int, p99: float = 10.0) -> dict[str, Any]:
    return {
        "app": app,
        "connections": connections,
        "round": round_no,
        "requests_per_s": accepted,
        "accepted_per_s": accepted,
        "non_2xx": 0,
        "p99_ms": p99,
        "cpu_ms_per_request": {"web": 1000 / accepted},
    }


def results(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ingest": points, "config": {"batch_messages": 100}}


# (bare, identify with the limiter, limiter off, Stripe) per round at 16 connections. Round 3's bare
# Flask point ran on a quiet machine and Tributary's on a loaded one.
ROUNDS = [(1000, 600, 620, 400), (4000, 2200, 2300, 1500), (5000, 1000, 1100, 700)]


def three_rounds(connections: int = 16) -> list[dict[str, Any]]:
    points = []
    for r, (bare, limited, off, stripe) in enumerate(ROUNDS):
        points += [
            point("bare", connections, bare, round_no=r),
            point("tributary-limiter", connections, limited, round_no=r, p99=[30, 80, 45][r]),
            point("tributary", connections, off, round_no=r),
            point("tributary-stripe", connections, stripe, round_no=r),
        ]
    return points


def figure(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(row for row in summary["targets"] if row["figure"] == name)


def test_each_ratio_is_the_median_of_its_rounds_own_ratios() -> None:
    summary = summarize(results(three_rounds()))
    entry = summary["ingest_ratio"]["16"]
    # Per round: 0.6, 0.55, 0.2 -> 0.55. Pooling the rounds first would give 1000/4000 = 0.25.
    assert [r["default_limiter"] for r in entry["rounds"]] == [0.6, 0.55, 0.2]
    assert entry["default_limiter"] == 0.55
    assert entry["stripe_webhook"] == 0.375  # 0.4, 0.375, 0.14
    assert entry["limiter_cost"] == round(1 - 2200 / 2300, 3)  # 0.032, 0.043, 0.091
    assert figure(summary, "identify / bare Flask, default config, 16 conns")["met"] is True
    assert figure(summary, "Stripe webhook / bare Flask, 16 conns")["met"] is True
    assert summary["ingest_p99_ms_at_max_connections"] == 45


def test_a_figure_falls_with_its_median_not_with_its_best_round() -> None:
    points = three_rounds()
    # Round 2 is now like round 3: two of three rounds below the target.
    for p in points:
        if p["round"] == 1 and p["app"] == "tributary-limiter":
            p["accepted_per_s"] = p["requests_per_s"] = 1000
    summary = summarize(results(points))
    assert summary["ingest_ratio"]["16"]["default_limiter"] == 0.25
    assert figure(summary, "identify / bare Flask, default config, 16 conns")["met"] is False
    assert summary["ingest_target_met"] is False


def test_a_round_without_its_bare_point_is_left_out() -> None:
    points = [p for p in three_rounds() if not (p["app"] == "bare" and p["round"] == 0)]
    entry = summarize(results(points))["ingest_ratio"]["16"]
    assert [r["default_limiter"] for r in entry["rounds"]] == [0.55, 0.2]
    assert entry["default_limiter"] == 0.375


def test_one_round_and_points_without_a_round_read_as_before() -> None:
    points = [point("bare", 64, 4000, round_no=0), point("tributary-limiter", 64, 1600, round_no=0)]
    points.append(point("tributary", 64, 1700, round_no=0))
    points.append(point("tributary-limiter-1key", 64, 1000, round_no=0))
    for p in points:
        del p["round"]  # results written before rounds existed
    entry = summarize(results(points))["ingest_ratio"]["64"]
    assert entry["default_limiter"] == 0.4
    assert entry["default_one_key"] == 0.25
    assert len(entry["rounds"]) == 1


def test_the_p99_comes_with_the_rate_it_needs_by_little_s_law() -> None:
    # wrk's 64 connections are always busy: a request's mean time is 64 / rate. Round 1: bare Flask
    # 3,200/s (20 ms) with a p99 of 60 ms (3x its mean), identify 1,600/s (40 ms), p99 100 (2.5x).
    # Round 2: bare 4,000/s (16 ms), p99 64 (4x); identify 2,000/s (32 ms), p99 96 (3x).
    points = []
    for r, (bare, bare_p99, ours, ours_p99) in enumerate(((3200, 60, 1600, 100), (4000, 64, 2000, 96))):
        points += [
            point("bare", 64, bare, round_no=r, p99=bare_p99),
            point("tributary-limiter", 64, ours, round_no=r, p99=ours_p99),
            point("tributary", 64, ours, round_no=r),
        ]
    summary = summarize(results(points))
    bound = summary["ingest_p99_bound"]
    assert summary["ingest_p99_ms_at_max_connections"] == 98
    assert bound["mean_ms"] == 36.0 and bound["bare_mean_ms"] == 18.0
    assert bound["p99_over_mean"] == {"tributary": 2.75, "bare": 3.5}
    # A 50 ms p99 at identify's shape (2.75) needs a mean of 18.2 ms: 64 x 2.75 / 0.05 = 3,520/s,
    # against bare Flask's median 3,600/s; at bare Flask's shape 4,480/s.
    assert bound["rate_needed_per_s"] == {"tributary": 3520.0, "bare": 4480.0}
    assert bound["rate_needed_over_bare"] == {"tributary": 0.978, "bare": 1.244}
    assert figure(summary, "bare Flask's own p99 at 64 conns")["value"] == 62
    row = figure(summary, "rate a 50 ms p99 needs / bare Flask's, at identify's tail, 64 conns")
    assert (row["value"], row["met"]) == (0.978, None)


def test_no_p99_bound_without_bare_flask_at_the_same_count() -> None:
    points = [point("tributary-limiter", 64, 1600, round_no=0), point("tributary", 64, 1700, round_no=0)]
    summary = summarize(results(points))
    assert summary["ingest_p99_ms_at_max_connections"] == 10
    assert "ingest_p99_bound" not in summary


def test_batch_is_set_beside_each_round_s_identify_and_the_figure_is_the_median() -> None:
    points = three_rounds()
    # Identify with the limiter: 600, 2,200, 1,000 requests/s in rounds 1-3.
    points += [point("tributary-batch", 16, rate, round_no=r) for r, rate in enumerate((90, 200, 40))]
    summary = summarize(results(points))
    # Per round: 9,000 / 600 = 15, 20,000 / 2,200 = 9.091, 4,000 / 1,000 = 4 -> 9.091. Against
    # identify's median (1,000/s), the median batch (9,000 events/s) would read 9.0.
    assert [r["ratio"] for r in summary["batch_ratio_rounds"]] == [15.0, 9.091, 4.0]
    assert summary["batch_ratio"] == 9.091
    assert summary["batch_events_per_s"] == 9000.0
    assert figure(summary, "/v1/batch (100/req) events/s / identify")["met"] is False


def test_the_report_prints_the_batch_figure_with_each_round() -> None:
    points = three_rounds()
    points += [point("tributary-batch", 16, rate, round_no=r) for r, rate in enumerate((90, 200, 40))]
    line = batch_line(summarize(results(points)))
    assert line.endswith("median of 3 round(s) [each round]: 9.09 [15.00 9.09 4.00]")
    one = batch_line(summarize(results([*three_rounds(), point("tributary-batch", 16, 90, round_no=0)])))
    assert one.endswith("median of 1 round(s) [each round]: 15.00")


def test_a_batch_round_without_its_identify_point_is_left_out() -> None:
    points = [p for p in three_rounds() if not (p["app"] == "tributary-limiter" and p["round"] == 2)]
    points += [point("tributary-batch", 16, rate, round_no=r) for r, rate in enumerate((90, 200, 40))]
    summary = summarize(results(points))
    assert [r["ratio"] for r in summary["batch_ratio_rounds"]] == [15.0, 9.091]
    assert summary["batch_ratio"] == 12.046  # the median of two: their mean
    assert figure(summary, "/v1/batch (100/req) events/s / identify")["met"] is True


def test_one_batch_point_is_set_beside_its_own_round() -> None:
    points = three_rounds()
    points.append(point("tributary-batch", 16, 180, round_no=0))
    summary = summarize(results(points))
    # 180 requests/s x 100 messages over round 1's identify, 600/s.
    assert summary["batch_ratio"] == 30.0
    assert len(summary["batch_ratio_rounds"]) == 1


def embedded_point(app: str, accepted: float, cpu_ms: dict[str, float], busy: float) -> dict[str, Any]:
    found = point(app, 16, accepted, round_no=0)
    found["cpu_ms_per_request"] = cpu_ms
    found["cpu_s"] = {"machine busy": busy, "machine capacity": 20.0}
    return found


def test_serve_s_ratio_comes_with_its_cpu_per_request_and_the_machine_s_idle_time() -> None:
    embedded = {
        "ingest_ratio": {"16": 0.4},
        "ingest": [
            embedded_point("bare-serve", 4000, {"web": 0.4, "wrk": 0.1}, busy=19.0),
            # serve's tree (web, worker, Redis) and wrk: 0.8 + 0.2 ms against bare Flask's 0.5.
            embedded_point("serve", 1600, {"web": 0.8, "wrk": 0.2, "steal": 5.0}, busy=16.0),
        ],
    }
    summary = summarize({"ingest": [], "embedded": embedded})
    assert summary["embedded"]["by_cpu"] == {"16": 0.5}
    assert summary["embedded"]["idle"] == {"16": {"serve": 0.2, "bare": 0.05}}
    assert figure(summary, "serve: identify / bare by CPU per request, 16 conns")["value"] == 0.5
    idle = figure(summary, "serve: machine idle while serve ran, 16 conns")
    assert (idle["value"], idle["unit"], idle["met"]) == (20.0, "%", None)
    assert figure(summary, "serve: identify / bare Flask (serve's config), 16 conns")["met"] is False


def test_serve_s_cpu_and_idle_figures_are_the_medians_of_their_rounds() -> None:
    def pair(round_no: int, bare_ms: float, serve_ms: float, serve_busy: float) -> list[dict[str, Any]]:
        bare = embedded_point("bare-serve", 4000, {"web": bare_ms}, busy=19.0)
        serve = embedded_point("serve", 2000, {"web": serve_ms}, busy=serve_busy)
        bare["round"] = serve["round"] = round_no
        return [bare, serve]

    embedded = {
        "ingest_ratio": {"16": 0.5},
        "ingest_ratio_rounds": {"16": [0.5, 0.45, 0.55]},
        # By CPU 0.5, 0.25, 0.8; idle 20 %, 10 %, 40 %: the medians are the first round's, the
        # last round's values are neither.
        "ingest": pair(0, 0.5, 1.0, 16.0) + pair(1, 0.5, 2.0, 18.0) + pair(2, 0.4, 0.5, 12.0),
    }
    summary = summarize({"ingest": [], "embedded": embedded})
    assert summary["embedded"]["by_cpu"] == {"16": 0.5}
    assert summary["embedded"]["idle"] == {"16": {"serve": 0.2, "bare": 0.05}}
    assert summary["embedded"]["ingest_ratio_rounds"] == {"16": [0.5, 0.45, 0.55]}
    assert figure(summary, "serve: identify / bare Flask (serve's config), 16 conns")["met"] is True


def test_the_idle_time_beside_serve_s_worker_is_reported_when_it_was_recorded() -> None:
    found = {"idle_beside_worker": 0.44, "worker_beside_idle": 0.59, "idle_ms": 1121.0, "worker_ms": 844.0}
    embedded = {"ingest_ratio": {}, "ingest": [], "schedule": {"16": found, "64": None}}
    summary = summarize({"ingest": [], "embedded": embedded})
    assert summary["embedded"]["schedule"] == {"16": found}
    row = figure(summary, "serve: of that idle time, beside its worker, 16 conns")
    assert (row["value"], row["unit"], row["met"]) == (44.0, "%", None)
    assert not [r for r in summary["targets"] if r["figure"].endswith("beside its worker, 64 conns")]
