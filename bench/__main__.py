"""`python -m bench` (or `python3 dev.py bench`): measure Allotment at lab scale.

    python3 dev.py bench                      # 10% and 100% of the lab, side by side
    python3 dev.py bench --fractions 0.05     # one quick run on a small lab (its own database)
    python3 dev.py bench --compare test-output/bench-20250101-120000.json
    python3 dev.py bench --only pages,http    # a subset of the stages (see --only)

Each fraction has its own database (created and generated on first use). The pages are measured
at every fraction; everything else at the largest. Writes test-output/bench-<timestamp>.json and
test-output/bench-latest.json (or --output FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

STAGES = ("pages", "api", "fit", "throughput", "latency", "http")
ROOT = Path(__file__).resolve().parent.parent


def _numbers(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = argparse.ArgumentParser(
        prog="python3 dev.py bench",
        description=__doc__.split("\n\n", 1)[1],
        epilog="docs/performance.md: what each stage measures, the targets, the latest run.",
        formatter_class=Formatter,
    )
    p.add_argument(
        "--fractions",
        default="0.1,1",
        help="lab sizes, comma-separated: the pages at each, the rest at the largest",
    )
    p.add_argument("--fraction", type=float, help="one lab size (the same as --fractions F)")
    p.add_argument("--seed", type=int, default=1, help="the lab generator's seed")
    p.add_argument(
        "--db",
        help="database names, one per fraction in --fractions order; or one name, for the largest "
        "(smaller ones get <name>_f<fraction>); none: allotment_bench[_f<fraction>]",
    )
    p.add_argument("--regenerate", action="store_true", help="drop and regenerate the data sets")
    p.add_argument("--drop-after", action="store_true", help="drop the databases at the end")
    p.add_argument("--repeats", type=int, default=15, help="measured requests per page")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured requests per page first")
    p.add_argument("--api-page-size", type=int, default=1000, help="page_size of the API walks")
    p.add_argument("--walk-max-pages", type=int, default=2000, help="give up a walk after this")
    p.add_argument(
        "--walk-max-seconds", type=float, default=600.0, help="give up a walk after this long"
    )
    p.add_argument("--fit-repeats", type=int, default=10, help="measured calls per fit question")
    p.add_argument("--changes", type=int, default=200, help="changes per throughput run")
    p.add_argument("--workers", default="1,2,4", help="process counts for the throughput runs")
    p.add_argument("--pools", type=int, default=3, help="bench pools the throughput runs share")
    p.add_argument("--latency-rate", type=float, default=10.0, help="approvals per second")
    p.add_argument("--latency-seconds", type=float, default=15.0, help="approving for this long")
    p.add_argument("--celery-workers", type=int, default=2, help="for the latency run")
    p.add_argument("--http-processes", type=int, default=3, help="gunicorn worker processes")
    p.add_argument("--http-threads", type=int, default=4, help="threads per gunicorn worker")
    p.add_argument("--http-clients", default="8,32", help="concurrent HTTP clients, one run each")
    p.add_argument("--http-seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--http-warmup", type=float, default=2.0, help="unmeasured seconds first")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--output", type=Path, help="write the JSON here instead of test-output/")
    p.add_argument("--compare", type=Path, help="an earlier JSON to compare with")
    p.add_argument(
        "--scale-run", action="store_true", help=argparse.SUPPRESS
    )  # a smaller lab's pages
    args = p.parse_args(argv)
    try:
        fractions = [args.fraction] if args.fraction else _numbers(args.fractions)
        args.http_client_counts = _numbers(args.http_clients, int)
        args.process_counts = _numbers(args.workers, int)
    except ValueError as exc:
        p.error(str(exc))
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        p.error("every fraction must be in (0, 1]")
    if len(set(fractions)) != len(fractions):
        p.error("--fractions repeats a fraction")
    from bench import database

    names = [n.strip() for n in args.db.split(",")] if args.db else []
    order = sorted(range(len(fractions)), key=lambda i: fractions[i])
    if len(names) == len(fractions):
        pairs = [(fractions[i], names[i]) for i in order]
    elif len(names) == 1:  # the largest gets the name; smaller ones a suffix
        largest = max(fractions)
        pairs = [
            (f, names[0] if f == largest else database.derived_name(names[0], f))
            for f in sorted(fractions)
        ]
    elif not names:
        pairs = [(f, database.default_name(f)) for f in sorted(fractions)]
    else:
        p.error("--db: give one name, or one per fraction")
    for _, name in pairs:
        if not database.NAME_OK.match(name):
            p.error(f"--db: {name!r} is not a plain database name")
    args.scales = pairs  # ascending: (fraction, database)
    args.fraction, args.db = pairs[-1]
    args.stages = STAGES if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}")
    return args


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _scale_args(args: argparse.Namespace, fraction: float, name: str, output: Path) -> list[str]:
    out = ["--fractions", f"{fraction:g}", "--db", name, "--only", "pages", "--scale-run"]
    out += ["--seed", str(args.seed), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    out += ["--output", str(output)] + (["--regenerate"] if args.regenerate else [])
    return out


def smaller_scales(args: argparse.Namespace) -> list[dict]:
    """The pages at each smaller fraction, each in a `python -m bench` of its own (its own
    database and cache prefix; Django is set up for one database per process)."""
    from bench.processes import die_with_parent

    found = []
    for fraction, name in args.scales[:-1]:
        log(f"pages at fraction {fraction:g} (database {name}), in a process of its own")
        with tempfile.TemporaryDirectory() as tmp:
            output = Path(tmp) / "scale.json"
            child = subprocess.Popen(
                [sys.executable, "-m", "bench", *_scale_args(args, fraction, name, output)],
                cwd=ROOT,
                preexec_fn=die_with_parent(),
            )
            try:
                child.wait()
            except KeyboardInterrupt:  # it got the Ctrl-C too: let it write and stop
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                raise
            if child.returncode != 0 or not output.exists():
                found.append({"fraction": fraction, "database": name, "error": "run failed"})
                continue
            done = json.loads(output.read_text())
        found.append(
            {
                "fraction": fraction,
                "database": name,
                "dataset": done["meta"]["dataset"],
                "baseline": done.get("baseline"),
                "pages": done.get("pages", []),
            }
        )
    return found


def main(argv: list[str]) -> int:
    args = parse(argv)
    from bench import database, processes

    processes.terminate_on_sigterm()
    name = args.db
    os.environ["BENCH_DATABASE_NAME"] = name
    # Always the bench settings: its own database and Redis index, and the baseline views' URLs.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    import django

    django.setup()
    from django.db import connections

    from bench import (
        api,
        fit,
        fixtures,
        idle,
        invariant,
        latency,
        pages,
        report,
        serving,
        throughput,
    )

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    results: dict = {
        "meta": {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": name,
            "load_average_start": report.load_average(),
            "args": {k: str(v) for k, v in vars(args).items()},
        },
        "targets": report.TARGETS,
    }
    try:
        smaller = smaller_scales(args) if "pages" in args.stages and len(args.scales) > 1 else []
        log(f"database {name}")
        dataset = database.prepare(
            name=name, fraction=args.fraction, seed=args.seed, regenerate=args.regenerate, log=log
        )
        results["meta"].update(dataset=dataset, machine=report.machine())
        if "pages" in args.stages or "fit" in args.stages:
            measured = pages.run(repeats=args.repeats, warmup=args.warmup, log=log)
            if "pages" in args.stages:
                results.update(baseline=measured["baseline"], pages=measured["pages"])
                if smaller:
                    largest = {
                        "fraction": args.fraction,
                        "database": name,
                        "dataset": dataset,
                        "baseline": measured["baseline"],
                        "pages": measured["pages"],
                    }
                    results["scales"] = [*smaller, largest]
            results["subjects"] = measured["subjects"]
            if "fit" in args.stages:
                results["fit"] = fit.run(
                    pool_id=measured["subjects"]["busiest_pool"], repeats=args.fit_repeats, log=log
                )
        if args.scale_run:
            return 0
        if "api" in args.stages:
            results["api_pages"] = api.run(
                page_size=args.api_page_size,
                repeats=args.repeats,
                warmup=args.warmup,
                max_pages=args.walk_max_pages,
                max_seconds=args.walk_max_seconds,
                log=log,
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
        if "http" in args.stages:
            try:
                results["http"] = serving.run(
                    db_name=name,
                    processes=args.http_processes,
                    threads=args.http_threads,
                    client_counts=args.http_client_counts,
                    seconds=args.http_seconds,
                    warmup=args.http_warmup,
                    log=log,
                )
            except Exception as exc:
                log(f"http run failed: {exc!r}")
                results["http"] = {"error": repr(exc)[:500]}
        results["idle"] = idle.run(log=log)
        found = invariant.violations()
        results["invariant_violations"] = len(found)
        results["invariant_examples"] = found[:10]
    finally:
        processes.stop_forked_children()
        results["meta"]["seconds"] = round(time.perf_counter() - started, 1)
        results["meta"]["load_average_end"] = report.load_average()
        results["summary"] = report.summary(results)
        paths = report.write(results, output=args.output, stamp=stamp)
        if not args.scale_run:
            print()
            print(report.table(results))
            if args.compare:
                print()
                print(report.compare(results, args.compare))
            print()
            log("results in " + ", ".join(str(p) for p in paths))
        if args.drop_after:
            connections.close_all()
            for _, each in args.scales:
                database.drop(each)
                log(f"dropped database {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
