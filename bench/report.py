"""The results: a table on stdout, JSON in test-output/, and a comparison with an earlier run."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path

from .stats import ratio

# Issue 13's targets (docs/performance.md, Targets), and the standing latency target.
TARGETS = {
    "html_page_ratio": 10.0,  # every HTML page's median / the trivial view's, full lab
    "api_page_ratio": 5.0,  # every API list page's
    "scale_ratio": 1.5,  # a page at 100% of the lab / the same page at 10%
    "last_page_ratio": 1.5,  # an API list's last page / its first
    "walk_ratio": 50.0,  # the whole allocations walk / one page of it
    "apply_ratio_4": 0.25,  # applies/s with 4 workers / the bare transaction's
    "http_rate_ratio": 0.2,  # requests/s through gunicorn / the trivial view's
    "http_p99_ratio": 5.0,  # p99 at the most clients / the trivial view's
    "forecast_ms": 300.0,  # every waiting request of every pool
    "forecast_one_pool_ms": 20.0,  # after a change to one pool
    "latency_p99_ms": 1000.0,  # approval to allocated
}


def _num(value, fmt: str = "{:.1f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def machine() -> dict:
    from django.db import connection

    info = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        info["memory_gb"] = round(total_kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        info["memory_gb"] = None
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        info["postgresql"] = cursor.fetchone()[0]
    try:
        import redis
        from django.conf import settings

        info["redis"] = redis.Redis.from_url(settings.BENCH_REDIS_URL).info()["redis_version"]
    except Exception as exc:
        info["redis"] = f"unknown ({exc})"
    import django

    info["django"] = django.get_version()
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.strip()
    except OSError:
        info["commit"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _is_api(row: dict) -> bool:
    return row.get("name", "").startswith("API ")


def _page_limit(row: dict) -> float:
    return TARGETS["api_page_ratio"] if _is_api(row) else TARGETS["html_page_ratio"]


def _by_page(rows: list[dict]) -> dict:
    return {(r.get("name"), r.get("persona")): r for r in rows}


def _scale_pairs(results: dict) -> list[tuple[dict, dict]]:
    """(smallest fraction's row, largest fraction's row) for every page measured at both."""
    scales = [s for s in results.get("scales", []) if "pages" in s]
    if len(scales) < 2:
        return []
    small = _by_page(scales[0]["pages"])
    out = []
    for row in scales[-1]["pages"]:
        other = small.get((row.get("name"), row.get("persona")))
        if other and "median_ms" in other and "median_ms" in row:
            out.append((other, row))
    return out


def _scale_ratio(pair: tuple[dict, dict]) -> float:
    small, large = pair
    return ratio(large["median_ms"], small["median_ms"])


def _pct(value) -> str:
    return _num(None if value is None else value * 100, "{:.0f}%")


def table(results: dict) -> str:
    lines = []
    base = results.get("baseline") or {}
    scales = [s for s in results.get("scales", []) if "pages" in s]
    small = _by_page(scales[0]["pages"]) if len(scales) > 1 else {}
    meta = results.get("meta", {})
    fraction = scales[-1]["fraction"] if scales else (meta.get("dataset") or {}).get("fraction")
    fraction = f"{fraction:g}" if isinstance(fraction, int | float) else "?"
    load = (meta.get("load_average_start"), meta.get("load_average_end"))
    lines.append(f"Load average (1, 5, 15 min) at the start {load[0]}, at the end {load[1]}")
    lines.append("")
    lines.append(
        "Pages and API lists (server time, in-process test Client, as the persona; x view = "
        "median / the same run's trivial view)"
    )
    if small:
        sf = scales[0]["fraction"]
        sb = scales[0].get("baseline") or {}
        lines.append(
            f"{'':<39} {'-- fraction ' + format(sf, 'g') + ' --':^23}  "
            f"{'-- fraction ' + fraction + ' --':^32}"
        )
        lines.append(
            f"{'page':<28} {'persona':<10} {'ms':>7} {'x view':>7} {'queries':>7}  {'ms':>7} "
            f"{'p95 ms':>7} {'x view':>7} {'queries':>7} {'growth':>6}  status"
        )
        lines.append(
            f"{'trivial view (session)':<28} {'exec':<10} {_num(sb.get('median_ms'), '{:.2f}'):>7} "
            f"{'1.0':>7} {sb.get('queries', '-')!s:>7}  {_num(base.get('median_ms'), '{:.2f}'):>7} "
            f"{_num(base.get('p95_ms'), '{:.2f}'):>7} {'1.0':>7} {base.get('queries', '-')!s:>7}"
        )
    else:
        lines.append(
            f"{'page':<28} {'persona':<10} {'ms':>7} {'p95 ms':>7} {'x view':>7} {'queries':>7}  status"
        )
        if base:
            lines.append(
                f"{'trivial view (session)':<28} {'exec':<10} {_num(base.get('median_ms'), '{:.2f}'):>7} "
                f"{_num(base.get('p95_ms'), '{:.2f}'):>7} {'1.0':>7} {base.get('queries', '-')!s:>7}"
            )
    for row in results.get("pages", []):
        notes = []
        if "error" in row:
            notes.append(f"ERROR {row['error']}")
        elif row.get("ratio", 0) > _page_limit(row):
            notes.append(f"over {_page_limit(row):g}x")
        head = f"{row['name']:<28} {row['persona']:<10} "
        full = (
            f"{_num(row.get('median_ms')):>7} {_num(row.get('p95_ms')):>7} "
            f"{_num(row.get('ratio')):>7} {row.get('queries', '-')!s:>7}"
        )
        if small:
            other = small.get((row["name"], row["persona"]), {})
            growth = (
                _scale_ratio((other, row)) if "median_ms" in other and "median_ms" in row else None
            )
            if growth is not None and growth > TARGETS["scale_ratio"]:
                notes.append(f"grows over {TARGETS['scale_ratio']:g}x")
            if "error" in other:
                notes.append(f"ERROR at {scales[0]['fraction']:g}: {other['error']}")
            lines.append(
                head + f"{_num(other.get('median_ms')):>7} {_num(other.get('ratio')):>7} "
                f"{other.get('queries', '-')!s:>7}  "
                + full
                + f" {_num(growth, '{:.2f}'):>6}  {', '.join(notes) or 'ok'}"
            )
        else:
            lines.append(head + full + f"  {', '.join(notes) or 'ok'}")
    api_rows = results.get("api_pages")
    if api_rows:
        lines.append("")
        lines.append(
            f"API lists page by page (page_size {api_rows[0].get('page_size')} asked, "
            "following `next` to the last page; in-process, exec)"
        )
        lines.append(
            f"{'list':<22} {'per page':>8} {'pages':>6} {'rows':>7} {'first ms':>8} "
            f"{'last ms':>8} {'last/1st':>8} {'walk s':>7} {'walk q':>7} {'walk/pg':>7}  status"
        )
        for row in api_rows:
            first, last = row.get("first") or {}, row.get("last") or {}
            status = "ok"
            if "error" in row:
                status = f"ERROR {row['error']}"
            elif row.get("last_ratio", 0) > TARGETS["last_page_ratio"]:
                status = f"last over {TARGETS['last_page_ratio']:g}x"
            lines.append(
                f"{row['name']:<22} {row.get('per_page', '-')!s:>8} {row.get('pages', '-')!s:>6} "
                f"{row.get('rows', '-')!s:>7} {_num(first.get('median_ms')):>8} "
                f"{_num(last.get('median_ms')):>8} {_num(row.get('last_ratio'), '{:.2f}'):>8} "
                f"{_num(row.get('walk_seconds'), '{:.2f}'):>7} {row.get('walk_queries', '-')!s:>7} "
                f"{_num(row.get('walk_ratio')):>7}  {status}"
            )
    lines.append("")
    lines.append("Fit questions and the forecast")
    for row in results.get("fit", []):
        lines.append(
            f"{row['name']:<32} pool {row.get('pool', '-')!s:<5} {_num(row.get('median_ms'), '{:.2f}'):>9} ms"
            f" (p95 {_num(row.get('p95_ms'), '{:.2f}')}), {row.get('queries')} queries"
        )
    lines.append("")
    lines.append("Apply throughput (P processes calling allocation_change_apply on shared pools)")
    lines.append(
        f"{'workers':>7} {'changes':>7} {'apply/s':>8} {'bare tx/s':>9} {'ratio':>6} {'applied':>7} {'violations':>10}"
    )
    for row in results.get("throughput", []):
        lines.append(
            f"{row.get('workers', '-')!s:>7} {row.get('changes', '-')!s:>7} {_num(row.get('apply_per_s')):>8} "
            f"{_num(row.get('baseline_tx_per_s')):>9} {_num(row.get('ratio'), '{:.2f}'):>6} "
            f"{row.get('applied', '-')!s:>7} {row.get('violations', '-')!s:>10}"
            + (f"  ERROR {row['error']}" if row.get("error") else "")
        )
    lat = results.get("latency")
    if lat:
        lines.append("")
        lines.append("Approval-to-allocated latency (real Celery workers and Redis)")
        lines.append(
            f"{lat.get('approvals')} approvals at {_num(lat.get('rate_achieved'))}/s, "
            f"{lat.get('workers')} workers: median {_num(lat.get('median_ms'), '{:.0f}')} ms, "
            f"p99 {_num(lat.get('p99_ms'), '{:.0f}')} ms, max {_num(lat.get('max_ms'), '{:.0f}')} ms; "
            f"outcomes {lat.get('outcomes')}; invariant violations {lat.get('violations')}"
            + (f"  ERROR {lat['error']}" if lat.get("error") else "")
        )
    web = results.get("http")
    if web:
        lines.append("")
        lines.append(
            f"HTTP through gunicorn ({web.get('processes')} processes x {web.get('threads')} "
            "threads, token auth, closed-loop clients on this machine)"
        )
        if web.get("error"):
            lines.append(f"ERROR {web['error']}")
        lines.append(
            f"{'endpoint':<22} {'clients':>7} {'req/s':>7} {'x view':>6} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'p99 x view':>10}  status"
        )
        for row in web.get("rows", []):
            notes = []
            if row.get("error"):
                notes.append(row["error"])
            if row.get("rate_ratio") is not None and row["rate_ratio"] < TARGETS["http_rate_ratio"]:
                notes.append(f"under {TARGETS['http_rate_ratio']:.0%} of the view")
            if (
                row.get("clients") == max(r["clients"] for r in web["rows"])
                and row.get("p99_ratio") is not None
                and row["p99_ratio"] > TARGETS["http_p99_ratio"]
            ):
                notes.append(f"p99 over {TARGETS['http_p99_ratio']:g}x")
            lines.append(
                f"{row['name']:<22} {row['clients']:>7} {_num(row.get('per_s')):>7} "
                f"{_pct(row.get('rate_ratio')) if 'rate_ratio' in row else '1.0':>6} "
                f"{_num(row.get('p50_ms'), '{:.0f}'):>7} {_num(row.get('p99_ms'), '{:.0f}'):>7} "
                f"{_num(row.get('p99_ratio')) if 'p99_ratio' in row else '1.0':>10}  "
                f"{', '.join(notes) or 'ok'}"
            )
    idle = results.get("idle")
    if idle:
        lines.append("")
        lines.append(
            f"Idle GPU-hours beside waiting requests that fit (next {idle['days']} days): "
            f"{_num(idle.get('idle_gpu_hours'), '{:.0f}')} ({idle['waiting']} waiting in "
            f"{idle['pools']} pools, {_num(idle.get('seconds'), '{:.1f}')} s)"
        )
    lines.append("")
    lines.append(f"Invariant violations in total: {results.get('invariant_violations')}")
    verdicts = results.get("summary") or summary(results)
    if verdicts:
        lines.append("")
        lines.append(f"Targets (ratios within this run; the largest lab: fraction {fraction})")
        width = max(len(v["target"]) for v in verdicts)
        for v in verdicts:
            status = {True: "met", False: "MISSED", None: "not measured"}[v["met"]]
            lines.append(f"{v['target']:<{width}}  {status:<12}  {v['figure']}")
    return "\n".join(lines)


def _verdict(target: str, met: bool | None, figure: str) -> dict:
    return {"target": target, "met": met, "figure": figure}


def _worst(rows: list[tuple[str, float]], limit: float, fmt: str = "x{:.1f}") -> tuple[bool, str]:
    over = [(name, value) for name, value in rows if not value <= limit]
    worst = max(rows, key=lambda r: r[1] if not math.isnan(r[1]) else math.inf)
    figure = f"{len(over)} of {len(rows)} over; worst {worst[0]} {fmt.format(worst[1])}"
    return not over, figure


def summary(results: dict) -> list[dict]:
    """Every target of issue 13 (and the standing ones) met, missed or not measured, with its
    figure from this run."""
    out = []
    pages = results.get("pages") or []
    errors = [r for r in pages if "error" in r]
    for label, api, limit in (
        ("every HTML page <= 10x the trivial view", False, TARGETS["html_page_ratio"]),
        ("every API list page <= 5x the trivial view", True, TARGETS["api_page_ratio"]),
    ):
        rows = [
            (f"{r['name']} ({r['persona']})", r["ratio"])
            for r in pages
            if _is_api(r) == api and "ratio" in r
        ]
        failed = [r for r in errors if _is_api(r) == api]
        if not rows:
            out.append(_verdict(label, None, "not measured"))
            continue
        met, figure = _worst(rows, limit)
        if failed:
            met, figure = False, f"{figure}; {len(failed)} failed"
        out.append(_verdict(label, met, figure))
    pairs = _scale_pairs(results)
    label = "every page at 100% of the lab <= 1.5x itself at 10%"
    if pairs:
        scales = results["scales"]
        label = (
            f"every page at {scales[-1]['fraction'] * 100:g}% of the lab <= 1.5x itself at "
            f"{scales[0]['fraction'] * 100:g}%"
        )
        rows = [(f"{b['name']} ({b['persona']})", _scale_ratio((a, b))) for a, b in pairs]
        out.append(_verdict(label, *_worst(rows, TARGETS["scale_ratio"], "x{:.2f}")))
        differ = [
            f"{b['name']} ({b['persona']}) {a['queries']}/{b['queries']}"
            for a, b in pairs
            if a.get("queries") != b.get("queries")
        ]
        out.append(
            _verdict(
                "query counts the same at both lab sizes",
                not differ,
                f"{len(differ)} of {len(pairs)} differ"
                + (": " + ", ".join(differ) if differ else ""),
            )
        )
    else:
        out.append(_verdict(label, None, "not measured (one lab size)"))
    api_rows = [r for r in results.get("api_pages") or [] if "last_ratio" in r]
    api_failed = [r for r in results.get("api_pages") or [] if "error" in r]
    label = "last API page <= 1.5x the first"
    if api_rows:
        met, figure = _worst(
            [(r["name"], r["last_ratio"]) for r in api_rows], TARGETS["last_page_ratio"], "x{:.2f}"
        )
        if api_failed:
            met, figure = False, f"{figure}; {len(api_failed)} failed"
        out.append(_verdict(label, met, figure))
    else:
        out.append(_verdict(label, None, "not measured"))
    walked = next(
        (r for r in results.get("api_pages") or [] if r.get("name") == "API allocations"), None
    )
    label = "full API walk of the allocations <= 50x one page"
    if walked and "walk_ratio" in walked:
        out.append(
            _verdict(
                label,
                walked["walk_ratio"] <= TARGETS["walk_ratio"],
                f"x{walked['walk_ratio']:.1f}: {walked['rows']} rows in {walked['pages']} pages "
                f"of {walked['per_page']}, {walked['walk_seconds']:.2f} s, "
                f"{walked['walk_queries']} queries (one page {walked['first']['median_ms']:.1f} ms)",
            )
        )
    else:
        out.append(_verdict(label, None, (walked or {}).get("error", "not measured")))
    four = [r for r in results.get("throughput", []) if r.get("workers") == 4]
    label = "applies with 4 workers >= 25% of the bare transaction"
    if four and four[0].get("ratio") is not None:
        r = four[0]
        out.append(
            _verdict(
                label,
                r["ratio"] >= TARGETS["apply_ratio_4"],
                f"{r['ratio']:.0%} ({r['apply_per_s']:.0f}/s against {r['baseline_tx_per_s']:.0f}/s)",
            )
        )
    else:
        out.append(
            _verdict(label, None, (four[0].get("error") if four else None) or "not measured")
        )
    out += _http_verdicts(results.get("http") or {})
    fit = {r["name"]: r for r in results.get("fit", [])}
    everything = fit.get("forecast all waiting requests")
    label = "forecast of every waiting request <= 0.3 s"
    if everything and everything.get("median_ms") is not None:
        ms = everything["median_ms"]
        out.append(_verdict(label, ms <= TARGETS["forecast_ms"], f"{ms / 1000:.2f} s"))
    else:
        out.append(_verdict(label, None, "not measured"))
    # bench/fit.py names the row of the forecast after one pool changed "forecast after ...".
    after = [r for name, r in fit.items() if name.startswith("forecast after")]
    label = "forecast after a change to one pool <= 20 ms"
    if after and after[0].get("median_ms") is not None:
        ms = after[0]["median_ms"]
        out.append(_verdict(label, ms <= TARGETS["forecast_one_pool_ms"], f"{ms:.1f} ms"))
    else:
        out.append(_verdict(label, None, "not measured"))
    lat = results.get("latency") or {}
    label = "approval-to-allocated p99 < 1 s"
    if lat.get("p99_ms") is not None and not math.isnan(lat["p99_ms"]):
        out.append(
            _verdict(label, lat["p99_ms"] < TARGETS["latency_p99_ms"], f"{lat['p99_ms']:.0f} ms")
        )
    else:
        out.append(_verdict(label, None, lat.get("error") or "not measured"))
    idle = results.get("idle") or {}
    if idle.get("idle_gpu_hours") is not None:
        out.append(
            _verdict(
                "no GPU-hour idle beside a waiting request that fits",
                idle["idle_gpu_hours"] == 0,
                f"{idle['idle_gpu_hours']:.0f} GPU-hours",
            )
        )
    if results.get("invariant_violations") is not None:
        n = results["invariant_violations"]
        out.append(_verdict("invariant: held <= capacity everywhere", n == 0, f"{n} violations"))
    return out


def _http_verdicts(web: dict) -> list[dict]:
    rows = [r for r in web.get("rows", []) if "rate_ratio" in r]
    out = []
    counts = sorted({r["clients"] for r in web.get("rows", [])})
    for name in ("API requests", "API pools"):
        mine = [r for r in rows if r["name"] == name]
        label = f"HTTP {name[4:]} list >= 20% of the view's requests/s"
        if not mine:
            out.append(_verdict(label, None, web.get("error") or "not measured"))
            out.append(_verdict(f"HTTP {name[4:]} list p99 <= 5x the view's", None, "not measured"))
            continue
        label += " at " + " and ".join(str(c) for c in counts) + " clients"
        met = all(
            r["rate_ratio"] >= TARGETS["http_rate_ratio"] and not r.get("error") for r in mine
        )
        figure = "; ".join(
            f"{r['clients']}: {_pct(r['rate_ratio'])} ({r['per_s']:.1f}/s)" for r in mine
        )
        out.append(_verdict(label, met, figure))
        top = max(mine, key=lambda r: r["clients"])
        out.append(
            _verdict(
                f"HTTP {name[4:]} list p99 at {top['clients']} clients <= 5x the view's",
                top["p99_ratio"] <= TARGETS["http_p99_ratio"],
                f"x{top['p99_ratio']:.1f} ({top['p99_ms']:.0f} ms)",
            )
        )
    return out


def write(results: dict, *, output: Path | None, stamp: str) -> list[Path]:
    out_dir = Path(__file__).resolve().parent.parent / "test-output"
    out_dir.mkdir(exist_ok=True)
    paths = [output] if output else [out_dir / f"bench-{stamp}.json", out_dir / "bench-latest.json"]
    text = json.dumps(results, indent=2, default=str, allow_nan=True)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def _figures(results: dict) -> dict[str, float]:
    """Comparable figures by key; higher-is-better ones are marked with a trailing '+'."""
    out = {}
    if results.get("baseline"):
        out["baseline view ms"] = results["baseline"].get("median_ms")
    scales = [s for s in results.get("scales", []) if "pages" in s]
    for scale in scales[:-1]:  # the largest is `pages` itself
        for row in scale["pages"]:
            if "median_ms" in row:
                out[f"{row['name']} [{row['persona']}] ms @{scale['fraction']:g}"] = row[
                    "median_ms"
                ]
    for row in results.get("pages", []):
        if "median_ms" in row:
            out[f"{row['name']} [{row['persona']}] ms"] = row["median_ms"]
            # The ratio to the same run's baseline is steadier than the time on a busy machine.
            out[f"{row['name']} [{row['persona']}] x base"] = row.get("ratio")
    for row in results.get("api_pages", []):
        for key in ("first", "last"):
            if "median_ms" in (row.get(key) or {}):
                out[f"{row['name']} {key} page ms"] = row[key]["median_ms"]
        if row.get("walk_seconds") is not None:
            out[f"{row['name']} walk s"] = row["walk_seconds"]
    for row in results.get("fit", []):
        out[f"{row['name']} ms"] = row.get("median_ms")
    for row in results.get("throughput", []):
        out[f"apply/s x{row['workers']} +"] = row.get("apply_per_s")
        out[f"bare tx/s x{row['workers']} +"] = row.get("baseline_tx_per_s")
    lat = results.get("latency") or {}
    out["latency median ms"] = lat.get("median_ms")
    out["latency p99 ms"] = lat.get("p99_ms")
    for row in (results.get("http") or {}).get("rows", []):
        out[f"http {row['name']} c{row['clients']} req/s +"] = row.get("per_s")
        out[f"http {row['name']} c{row['clients']} p99 ms"] = row.get("p99_ms")
    return out


def compare(results: dict, earlier_path: Path) -> str:
    earlier = json.loads(earlier_path.read_text())
    now, then = _figures(results), _figures(earlier)
    lines = [
        f"Compared with {earlier_path} ({earlier.get('meta', {}).get('timestamp', '?')}):",
        f"{'figure':<48} {'then':>9} {'now':>9} {'now/then':>8}",
    ]
    for key, value in now.items():
        old = then.get(key)
        if value is None or old in (None, 0):
            continue
        change = value / old
        better = change > 1 if key.endswith("+") else change < 1
        lines.append(
            f"{key:<48} {_num(old, '{:.2f}'):>9} {_num(value, '{:.2f}'):>9} {change:>8.2f}"
            + ("" if abs(change - 1) < 0.1 else ("  better" if better else "  worse"))
        )
    return "\n".join(lines)
