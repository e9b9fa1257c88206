"""The bench harness (bench/): its pieces on their own, and one end-to-end run at a tiny fraction
with real Celery workers, checked for a complete, numeric report and an unbroken invariant. No
wall-clock assertions: the figures depend on the machine."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from allocator.planning import Demand
from allocator.timeline import Span, Timeline
from bench import api, database, idle, invariant, pages, report
from bench.stats import median, percentile, ratio
from tests import factories
from tests.support.processes import alive, children_of
from tests.support.proofs import wait_for

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


@pytest.mark.django_db
@pytest.mark.parametrize("page_size", [3, 7, 50])
def test_the_api_walk_follows_next_to_the_last_page_and_sees_every_row_once(page_size):
    # given 7 allocations an executive sees
    client = Client()
    client.force_login(factories.RoleGrantFactory(role="executive").user)
    pool = factories.PoolFactory(capacity=64)
    start = timezone.now() - timedelta(days=1)
    for i in range(7):
        factories.AllocationFactory(
            pool=pool, gpus=1, start=start, end=start + timedelta(days=i + 2)
        )
    # when
    found = api.walk(client, f"/api/v1/allocations/?page_size={page_size}", max_pages=10)
    # then: ceil(7 / page_size) pages, every row once, and the last page has no `next`
    assert found["pages"] == -(-7 // page_size)
    assert found["rows"] == found["distinct"] == 7
    last = client.get(found["last_path"], HTTP_ACCEPT="application/json").json()
    assert last["next"] is None
    assert found["queries"] > 0


@pytest.mark.django_db
def test_the_api_walk_gives_up_after_max_pages_or_seconds():
    # given
    client = Client()
    client.force_login(factories.RoleGrantFactory(role="executive").user)
    pool = factories.PoolFactory(capacity=64)
    for _ in range(3):
        factories.AllocationFactory(pool=pool, gpus=1)
    # when / then
    with pytest.raises(RuntimeError, match="no last page within 2 pages"):
        api.walk(client, "/api/v1/allocations/?page_size=1", max_pages=2)
    with pytest.raises(RuntimeError, match=r"no last page within 0 s \(1 pages, 1 rows\)"):
        api.walk(client, "/api/v1/allocations/?page_size=1", max_pages=10, max_seconds=0)


def _page(name, persona, ms, ratio_, queries=5):
    return {"name": name, "persona": persona, "median_ms": ms, "ratio": ratio_, "queries": queries}


def test_the_summary_says_met_or_missed_for_every_target_with_its_figure():
    # given a run where the overview is 12x the view and doubles with the lab, the requests API is
    # within 5x, the last allocations page is 3x the first, and gunicorn serves the requests list
    # at 10% of the view's rate
    small = [_page("overview", "exec", 10.0, 5.0), _page("API requests", "exec", 4.0, 2.0)]
    large = [_page("overview", "exec", 24.0, 12.0), _page("API requests", "exec", 5.0, 2.5, 6)]
    results = {
        "pages": large,
        "scales": [{"fraction": 0.1, "pages": small}, {"fraction": 1, "pages": large}],
        "api_pages": [
            {
                "name": "API allocations",
                "first": {"median_ms": 10.0},
                "last_ratio": 3.0,
                "walk_ratio": 40.0,
                "rows": 31500,
                "pages": 32,
                "per_page": 1000,
                "walk_seconds": 0.4,
                "walk_queries": 96,
            }
        ],
        "throughput": [{"workers": 4, "ratio": 0.3, "apply_per_s": 300, "baseline_tx_per_s": 1000}],
        "http": {
            "rows": [
                {"name": "trivial view (token)", "clients": 32, "per_s": 500, "p99_ms": 100},
                {
                    "name": "API requests",
                    "clients": 32,
                    "per_s": 50,
                    "p99_ms": 400,
                    "rate_ratio": 0.1,
                    "p99_ratio": 4.0,
                },
            ]
        },
        "fit": [{"name": "forecast all waiting requests", "median_ms": 250.0}],
        "invariant_violations": 0,
    }
    # when
    verdicts = {v["target"]: v for v in report.summary(results)}
    # then
    assert verdicts["every HTML page <= 10x the trivial view"]["met"] is False
    assert "overview (exec) x12.0" in verdicts["every HTML page <= 10x the trivial view"]["figure"]
    assert verdicts["every API list page <= 5x the trivial view"]["met"] is True
    assert verdicts["every page at 100% of the lab <= 1.5x itself at 10%"]["met"] is False
    assert verdicts["query counts the same at both lab sizes"]["met"] is False
    assert (
        "API requests (exec) 5/6" in verdicts["query counts the same at both lab sizes"]["figure"]
    )
    assert verdicts["last API page <= 1.5x the first"]["met"] is False
    assert verdicts["full API walk of the allocations <= 50x one page"]["met"] is True
    assert verdicts["applies with 4 workers >= 25% of the bare transaction"]["met"] is True
    assert (
        verdicts["HTTP requests list >= 20% of the view's requests/s at 32 clients"]["met"] is False
    )
    assert verdicts["HTTP requests list p99 at 32 clients <= 5x the view's"]["met"] is True
    assert verdicts["HTTP pools list >= 20% of the view's requests/s"]["met"] is None
    assert verdicts["forecast of every waiting request <= 0.3 s"]["met"] is True
    assert verdicts["forecast after a change to one pool <= 20 ms"]["met"] is None
    assert verdicts["approval-to-allocated p99 < 1 s"]["met"] is None
    assert verdicts["invariant: held <= capacity everywhere"]["met"] is True
    # and the table prints each with its status
    text = report.table({**results, "meta": {}})
    assert "MISSED" in text and "not measured" in text


@pytest.mark.parametrize(
    ("argv", "scales"),
    [
        ([], [(0.1, "allotment_bench_f0_1"), (1.0, "allotment_bench")]),
        (["--fraction", "0.05"], [(0.05, "allotment_bench_f0_05")]),
        (["--fractions", "1,0.1", "--db", "x_full,x_f01"], [(0.1, "x_f01"), (1.0, "x_full")]),
        (["--fractions", "0.1,0.5", "--db", "mine"], [(0.1, "mine_f0_1"), (0.5, "mine")]),
    ],
)
def test_each_fraction_gets_its_own_database(argv, scales):
    # given / when
    from bench.__main__ import parse

    args = parse(argv)
    # then: ascending, the largest runs everything
    assert args.scales == scales
    assert (args.fraction, args.db) == scales[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--fractions", "0,1"],
        ["--fractions", "0.1,0.1"],
        ["--db", "a,b,c"],
        ["--db", "Robert'); DROP"],
    ],
)
def test_bad_bench_arguments_are_refused(argv, capsys):
    from bench.__main__ import parse

    with pytest.raises(SystemExit):
        parse(argv)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(120)
def test_the_bench_gunicorn_dies_when_the_bench_is_killed(tmp_path):
    # given a stand-in for the bench that starts its gunicorn the way the bench does
    pid_file = tmp_path / "gunicorn.pid"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
        import django; django.setup()
        from bench.serving import Server
        proc = Server(db_name="allotment_bench_unused", processes=2, threads=1).launch()
        open({str(pid_file)!r}, "w").write(str(proc.pid))
        time.sleep(600)
        """
    )
    stand_in = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        assert wait_for(pid_file.exists, 30)
        master = int(pid_file.read_text())
        assert wait_for(lambda: len(children_of(master)) >= 2, 60), "gunicorn did not boot"
        workers = children_of(master)
        # when the stand-in is killed with no chance to clean up
        stand_in.send_signal(signal.SIGKILL)
        stand_in.wait(10)
        # then gunicorn and its workers go too
        assert wait_for(lambda: not alive(master), 15), "gunicorn outlived the bench"
        assert wait_for(lambda: not any(alive(p) for p in workers), 30), "workers survived"
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _processes_with_env(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.worker
@pytest.mark.timeout(300)
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
            "--fractions",
            "0.005,0.01",
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
            "--api-page-size",
            "100",
            "--http-processes",
            "1",
            "--http-threads",
            "2",
            "--http-clients",
            "2",
            "--http-seconds",
            "1",
            "--http-warmup",
            "0.5",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    # then
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Apply throughput" in run.stdout
    results = json.loads(out.read_text())
    assert _number(results["baseline"]["median_ms"])
    expected = {
        (t.name, t.persona)
        for t in pages.targets(dict.fromkeys(("waiting_request", "busiest_pool", "project"), 1))
    }
    # every page at both lab sizes, each in its own database, side by side in the table
    assert [s["fraction"] for s in results["scales"]] == [0.005, 0.01]
    assert [s["database"] for s in results["scales"]] == [f"{db_name}_f0_005", db_name]
    assert results["scales"][-1]["pages"] == results["pages"]
    for scale in results["scales"]:
        assert _number(scale["baseline"]["median_ms"])
        assert {(row["name"], row["persona"]) for row in scale["pages"]} == expected
        for row in scale["pages"]:
            assert "error" not in row, row
            for key in ("median_ms", "p95_ms", "ratio", "queries"):
                assert _number(row[key]), (row["name"], key, row.get(key))
    assert "-- fraction 0.005 --" in run.stdout and "-- fraction 0.01 --" in run.stdout
    # the first and last page of every API list, reached over `next`
    walks = {row["name"]: row for row in results["api_pages"]}
    assert set(walks) == {f"API {name}" for name in api.LISTS}
    for row in walks.values():
        assert "error" not in row, row
        assert _number(row["first"]["median_ms"]) and _number(row["last"]["median_ms"])
        assert _number(row["last_ratio"]) and row["rows"] == row["distinct"]
    allocations = walks["API allocations"]
    assert allocations["pages"] > 1 and allocations["per_page"] == 100
    assert _number(allocations["walk_seconds"]) and allocations["walk_queries"] > 0
    # HTTP through gunicorn: the trivial view, pools and requests, every answer a 200
    http = results["http"]
    assert "error" not in http, http
    assert [(r["name"], r["clients"]) for r in http["rows"]] == [
        ("trivial view (token)", 2),
        ("API pools", 2),
        ("API requests", 2),
    ]
    for row in http["rows"]:
        assert set(row["statuses"]) == {"200"}, row
        assert row["per_s"] > 0 and _number(row["p50_ms"]) and _number(row["p99_ms"])
    assert _number(http["rows"][1]["rate_ratio"]) and _number(http["rows"][2]["p99_ratio"])
    # every target has a verdict, printed in the table
    verdicts = {v["target"]: v["met"] for v in results["summary"]}
    assert verdicts["invariant: held <= capacity everywhere"] is True
    assert verdicts["every page at 1% of the lab <= 1.5x itself at 0.5%"] in (True, False)
    assert verdicts["full API walk of the allocations <= 50x one page"] in (True, False)
    assert verdicts["HTTP requests list >= 20% of the view's requests/s at 2 clients"] in (
        True,
        False,
    )
    assert "Targets (ratios within this run" in run.stdout
    # nothing the bench started outlives it, and both databases are gone
    assert _processes_with_env(f"BENCH_DATABASE_NAME={db_name}".encode()) == []
    assert not database.exists(db_name) and not database.exists(f"{db_name}_f0_005")
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
