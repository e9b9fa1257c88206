"""The bench harness (bench/): its pieces on their own, and one end-to-end run at a tiny fraction
with real Celery workers, checked for a complete, numeric report and an unbroken invariant. No
wall-clock assertions: the figures depend on the machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from allocator.planning import Demand
from allocator.timeline import Span, Timeline
from bench import idle, invariant, pages, report
from bench.stats import median, percentile, ratio
from tests import factories

ROOT = Path(__file__).resolve().parents[2]


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --- pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([5.0], 99, 5.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 95, 4), (list(range(1, 101)), 99, 99)],
)
def test_percentile_is_nearest_rank(values, p, expected):
    # given / when / then
    assert percentile(values, p) == expected


def test_median_and_ratio_of_nothing_are_nan():
    # given / when / then
    assert math.isnan(median([]))
    assert math.isnan(ratio(1.0, 0.0))
    assert ratio(10.0, 4.0) == 2.5


@pytest.mark.django_db
def test_invariant_sweep_finds_an_over_allocation_and_only_it():
    # given: 64 GPUs; two overlapping allocations of 40 hold 80 during the overlap
    pool = factories.PoolFactory(capacity=64)
    start = timezone.now() + timedelta(days=1)
    factories.AllocationFactory(pool=pool, gpus=40, start=start, end=start + timedelta(days=5))
    factories.AllocationFactory(
        pool=pool, gpus=40, start=start + timedelta(days=2), end=start + timedelta(days=9)
    )
    fine = factories.PoolFactory(capacity=64)
    factories.AllocationFactory(pool=fine, gpus=64, start=start, end=start + timedelta(days=2))
    factories.AllocationFactory(
        pool=fine, gpus=64, start=start + timedelta(days=2), end=start + timedelta(days=4)
    )
    # when
    found = invariant.violations()
    # then: the overlap of the first pool, not the back-to-back allocations of the second
    assert len(found) == 1
    assert found[0].startswith(f"pool {pool.pk} at ") and "80 held > 64" in found[0]


@pytest.mark.django_db
def test_invariant_sweep_counts_capacity_arriving_at_the_same_instant():
    # given: 64 GPUs, 32 more arriving exactly when an allocation of 96 starts
    pool = factories.PoolFactory(capacity=64)
    at = timezone.now() + timedelta(days=3)
    factories.CapacityChangeFactory(pool=pool, kind="arrival", delta=32, effective_at=at)
    factories.AllocationFactory(pool=pool, gpus=96, start=at, end=at + timedelta(days=1))
    # when / then
    assert invariant.violations() == []


BASE = timezone.now().replace(microsecond=0)
HOUR = timedelta(hours=1)


def test_idle_figure_counts_free_gpu_hours_a_waiting_request_could_use_once():
    # given 10 GPUs, 6 held for 100 hours; two waiting requests that both fit in the 4 free
    record = Timeline(BASE, [(BASE - HOUR, 10)], [Span(BASE, BASE + 100 * HOUR, 6)])
    waiting = [Demand(1, 4, BASE, 10 * HOUR), Demand(2, 4, BASE, 10 * HOUR)]
    # when / then: the first counts 40 GPU-hours; the second asks for the same 4 over the same
    # hours, so they count once
    assert idle.idle_on(record, waiting, until=BASE + 90 * 24 * HOUR) == 40
    # only the hours inside the window count
    assert idle.idle_on(record, waiting[:1], until=BASE + 5 * HOUR) == 20


def test_idle_figure_is_zero_for_requests_that_cannot_be_placed_and_respects_reservations():
    record = Timeline(BASE, [(BASE - HOUR, 10)], [Span(BASE, BASE + 100 * HOUR, 6)])
    too_big = Demand(1, 8, BASE, 10 * HOUR)  # fixed, 4 free: holds nothing, uses nothing
    assert idle.idle_on(record, [too_big], until=BASE + 1000 * HOUR) == 0
    # a flexible one that fits in its window counts (the engine would have placed it), and the
    # one behind it must fit around it: those GPUs count once
    flexible = Demand(2, 10, BASE, 10 * HOUR, latest_start=BASE + 200 * HOUR)
    behind = Demand(3, 4, BASE + 100 * HOUR, 10 * HOUR)
    assert idle.idle_on(record, [flexible, behind], until=BASE + 1000 * HOUR) == 100


@pytest.mark.django_db
def test_idle_figure_is_zero_after_the_engine_serves_what_the_data_set_left_waiting(pool):
    # given a pool of 64 with 60 held, and stored as waiting (as the lab generator writes them,
    # without serving): a request for 8 that cannot be placed, and one for 4 that fits
    factories.AllocationFactory(pool=pool, gpus=60, start=BASE - HOUR, end=BASE + 40 * 24 * HOUR)
    for gpus in (8, 4):
        factories.AllocationChangeFactory(
            pool=pool,
            gpus=gpus,
            start=BASE + 24 * HOUR,
            end=BASE + 10 * 24 * HOUR,
            status="waiting",
            executive_reviewed=True,
        )
    # when the figure is taken
    found = idle.run(log=lambda line: None, now=BASE)
    # then the 4 is placed by the engine's pass and nothing stands idle; the 8 still waits
    assert found["idle_gpu_hours"] == 0
    assert found["waiting"] == 1


@pytest.fixture
def bench_urls(settings):
    settings.ROOT_URLCONF = "bench.urls"


@pytest.mark.django_db
def test_baseline_view_runs_one_query_and_asks_for_sign_in(bench_urls):
    # given
    user = factories.UserFactory()
    client = Client()
    # when: signed out
    response = client.get("/bench/baseline/")
    # then
    assert response.status_code == 302
    # when: signed in
    client.force_login(user)
    row = pages._measure(client, "/bench/baseline/", repeats=2, warmup=1)
    # then: session, user, SELECT 1
    assert row["status"] == 200 and row["queries"] == 3
    assert _number(row["median_ms"]) and _number(row["p95_ms"])


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/requests/999999999/", "/no-such-page/"])
def test_a_page_that_fails_is_an_error_row(bench_urls, path):
    # given
    client = Client()
    client.force_login(factories.UserFactory())
    # when
    row = pages._measure(client, path, repeats=2, warmup=1)
    # then
    assert row == {"status": 404, "error": "HTTP 404"}


def test_compare_reports_each_figure_against_the_earlier_run(tmp_path):
    # given
    earlier = {
        "baseline": {"median_ms": 2.0},
        "pages": [{"name": "pools", "persona": "exec", "median_ms": 10.0}],
        "throughput": [{"workers": 4, "apply_per_s": 50.0, "baseline_tx_per_s": 500.0}],
        "latency": {"median_ms": 100.0, "p99_ms": 300.0},
    }
    now = json.loads(json.dumps(earlier))
    now["pages"][0]["median_ms"] = 20.0
    now["throughput"][0]["apply_per_s"] = 100.0
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    # when
    text = report.compare(now, path)
    # then
    assert "pools [exec] ms" in text and "2.00  worse" in text
    assert "apply/s x4 +" in text and "2.00  better" in text


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.timeout(180)
def test_bench_end_to_end_at_a_tiny_fraction(tmp_path):
    # given: its own database and Redis index, dropped afterwards
    db_name = f"allotment_bench_pytest_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "bench.json"
    redis_base = settings.REDIS_URL.rsplit("/", 1)[0]
    env = {
        **os.environ,
        "BENCH_REDIS_URL": os.environ.get("BENCH_TEST_REDIS_URL", f"{redis_base}/14"),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # when
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--fraction",
            "0.01",
            "--db",
            db_name,
            "--regenerate",
            "--drop-after",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--fit-repeats",
            "2",
            "--workers",
            "1",
            "--changes",
            "6",
            "--latency-rate",
            "3",
            "--latency-seconds",
            "2",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    # then
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Apply throughput" in run.stdout
    results = json.loads(out.read_text())
    assert _number(results["baseline"]["median_ms"])
    names = {(row["name"], row["persona"]) for row in results["pages"]}
    expected = {
        (t.name, t.persona)
        for t in pages.targets(dict.fromkeys(("waiting_request", "busiest_pool", "project"), 1))
    }
    assert names == expected
    for row in results["pages"]:
        assert "error" not in row, row
        for key in ("median_ms", "p95_ms", "ratio", "queries"):
            assert _number(row[key]), (row["name"], key, row.get(key))
    assert [r["name"] for r in results["fit"]] == [
        "fits",
        "earliest_start",
        "forecast all waiting requests, computed",
        "forecast all waiting requests",
        "forecast after a change to one pool",
    ]
    assert all(_number(r["median_ms"]) and _number(r["queries"]) for r in results["fit"])
    (tp,) = results["throughput"]
    assert tp["workers"] == 1 and tp["applied"] == tp["changes"] == 6
    for key in ("apply_per_s", "baseline_tx_per_s", "ratio"):
        assert _number(tp[key]), key
    assert tp["violations"] == 0
    latency = results["latency"]
    assert "error" not in latency, latency
    assert latency["settled"] == latency["approvals"] and latency["outcomes"] == {
        "applied": latency["approvals"]
    }
    assert _number(latency["median_ms"]) and _number(latency["p99_ms"])
    assert latency["violations"] == 0
    assert results["invariant_violations"] == 0
    # work conservation at lab scale: no GPU-hour stands idle beside a waiting request that fits
    assert results["idle"]["idle_gpu_hours"] == 0 and results["idle"]["waiting"] > 0
    assert "Idle GPU-hours beside waiting requests that fit (next 90 days): 0 (" in run.stdout
    for key in ("nproc", "postgresql", "redis"):
        assert results["meta"]["machine"][key]
