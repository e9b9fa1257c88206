"""`python -m bench` (or `python3 dev.py bench`): measure Allotment at lab scale.

    python3 dev.py bench                      # full lab (created on first run, ~1 min)
    python3 dev.py bench --fraction 0.05      # a quick run on a small lab in its own database
    python3 dev.py bench --compare test-output/bench-20250101-120000.json
    python3 dev.py bench --only pages,fit     # a subset: pages, fit, throughput, latency

Writes test-output/bench-<timestamp>.json and test-output/bench-latest.json (or --output FILE).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

STAGES = ("pages", "fit", "throughput", "latency")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 dev.py bench", description=__doc__.split("\n")[0])
    p.add_argument("--fraction", type=float, default=1.0, help="lab size, e.g. 0.05 (default 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--db", help="database name (default allotment_bench[_f<fraction>])")
    p.add_argument("--regenerate", action="store_true", help="drop and regenerate the data set")
    p.add_argument("--drop-after", action="store_true", help="drop the database at the end")
    p.add_argument("--repeats", type=int, default=15, help="measured requests per page")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests per page first")
    p.add_argument("--fit-repeats", type=int, default=30)
    p.add_argument("--changes", type=int, default=200, help="changes per throughput run")
    p.add_argument(
        "--workers", default="1,2,4", help="process counts for the throughput runs (1,2,4)"
    )
    p.add_argument("--pools", type=int, default=3, help="bench pools the throughput runs share")
    p.add_argument("--latency-rate", type=float, default=10.0, help="approvals per second")
    p.add_argument("--latency-seconds", type=float, default=15.0)
    p.add_argument("--celery-workers", type=int, default=2)
    p.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--output", type=Path, help="write the JSON here instead of test-output/")
    p.add_argument("--compare", type=Path, help="an earlier JSON to compare with")
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        p.error("--fraction must be in (0, 1]")
    args.stages = STAGES if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}")
    args.process_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    return args


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def main(argv: list[str]) -> int:
    args = parse(argv)
    from bench import database

    name = args.db or database.default_name(args.fraction)
    os.environ["BENCH_DATABASE_NAME"] = name
    # Always the bench settings: its own database and Redis index, and the baseline view's URL.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    import django

    django.setup()
    from django.db import connections

    from bench import fit, fixtures, idle, invariant, latency, pages, report, throughput

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    log(f"database {name}")
    dataset = database.prepare(
        name=name, fraction=args.fraction, seed=args.seed, regenerate=args.regenerate, log=log
    )
    results: dict = {
        "meta": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": name,
            "dataset": dataset,
            "machine": report.machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        "targets": report.TARGETS,
    }
    try:
        if "pages" in args.stages or "fit" in args.stages:
            measured = pages.run(repeats=args.repeats, warmup=args.warmup, log=log)
            if "pages" in args.stages:
                results.update(baseline=measured["baseline"], pages=measured["pages"])
            results["subjects"] = measured["subjects"]
            if "fit" in args.stages:
                results["fit"] = fit.run(
                    pool_id=measured["subjects"]["busiest_pool"], repeats=args.fit_repeats, log=log
                )
        subjects = None
        if "throughput" in args.stages or "latency" in args.stages:
            subjects = fixtures.subjects(args.pools)
        if "throughput" in args.stages:
            results["throughput"] = throughput.run(
                subjects=subjects,
                changes=args.changes,
                process_counts=args.process_counts,
                log=log,
            )
        if "latency" in args.stages:
            try:
                results["latency"] = latency.run(
                    subjects=subjects,
                    rate=args.latency_rate,
                    seconds=args.latency_seconds,
                    workers=args.celery_workers,
                    db_name=name,
                    log=log,
                )
            except Exception as exc:  # report it; the rest of the run still counts
                log(f"latency run failed: {exc!r}")
                results["latency"] = {"error": repr(exc)[:500]}
        results["idle"] = idle.run(log=log)
        found = invariant.violations()
        results["invariant_violations"] = len(found)
        results["invariant_examples"] = found[:10]
    finally:
        results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        paths = report.write(results, output=args.output, stamp=stamp)
        print()
        print(report.table(results))
        if args.compare:
            print()
            print(report.compare(results, args.compare))
        print()
        log("results in " + ", ".join(str(p) for p in paths))
        if args.drop_after:
            connections.close_all()
            database.drop(name)
            log(f"dropped database {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
