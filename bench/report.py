"""The results: a table on stdout, JSON in test-output/, and a comparison with an earlier run."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path

TARGETS = {"page_ratio": 5.0, "apply_ratio_4": 0.25, "latency_p99_ms": 1000.0}


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


def table(results: dict) -> str:
    lines = []
    base = results.get("baseline") or {}
    lines.append(
        "Pages and API lists (server time, in-process test Client; ratio = median / baseline median)"
    )
    lines.append(
        f"{'page':<28} {'persona':<10} {'median ms':>9} {'p95 ms':>8} {'ratio':>6} {'queries':>7}  status"
    )
    if base:
        lines.append(
            f"{'baseline (SELECT 1 view)':<28} {'exec':<10} {_num(base.get('median_ms'), '{:.2f}'):>9} "
            f"{_num(base.get('p95_ms'), '{:.2f}'):>8} {'1.0':>6} {base.get('queries', '-'):>7}  200"
        )
    for row in results.get("pages", []):
        status = "ok" if "error" not in row else f"ERROR {row['error']}"
        if "error" not in row and row.get("ratio", 0) > TARGETS["page_ratio"]:
            status = f"over {TARGETS['page_ratio']:g}x"
        lines.append(
            f"{row['name']:<28} {row['persona']:<10} {_num(row.get('median_ms')):>9} "
            f"{_num(row.get('p95_ms')):>8} {_num(row.get('ratio')):>6} "
            f"{row.get('queries', '-')!s:>7}  {status}"
        )
    lines.append("")
    lines.append("Fit questions on the busiest pool")
    for row in results.get("fit", []):
        lines.append(
            f"{row['name']:<28} pool {row['pool']!s:<5} {_num(row.get('median_ms'), '{:.2f}'):>9} ms"
            f" (p95 {_num(row.get('p95_ms'), '{:.2f}')}), {row.get('queries')} queries"
        )
    lines.append("")
    lines.append("Apply throughput (P processes calling allocation_change_apply on shared pools)")
    lines.append(
        f"{'workers':>7} {'changes':>7} {'apply/s':>8} {'bare tx/s':>9} {'ratio':>6} {'applied':>7} {'violations':>10}"
    )
    for row in results.get("throughput", []):
        lines.append(
            f"{row['workers']:>7} {row['changes']:>7} {_num(row.get('apply_per_s')):>8} "
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
    verdicts = targets(results)
    if verdicts:
        lines.append("Targets: " + "; ".join(verdicts))
    return "\n".join(lines)


def targets(results: dict) -> list[str]:
    out = []
    pages = [r for r in results.get("pages", []) if "ratio" in r]
    errors = [r for r in results.get("pages", []) if "error" in r]
    over = [f"{r['name']} ({r['persona']}) x{r['ratio']:.1f}" for r in pages if r["ratio"] > 5]
    if over:
        out.append("pages within 5x baseline: NO: " + ", ".join(over))
    elif errors:
        out.append(f"pages within 5x baseline: unknown, {len(errors)} page(s) failed")
    elif pages:
        out.append("pages within 5x baseline: yes")
    four = [r for r in results.get("throughput", []) if r.get("workers") == 4 and r.get("ratio")]
    if four:
        ok = four[0]["ratio"] >= TARGETS["apply_ratio_4"]
        out.append(f"apply with 4 workers >= 25% of bare tx: {'yes' if ok else 'NO'}")
    idle = results.get("idle") or {}
    if idle.get("idle_gpu_hours") is not None:
        ok = idle["idle_gpu_hours"] == 0
        out.append(f"no GPUs idle beside a waiting request that fits: {'yes' if ok else 'NO'}")
    lat = results.get("latency") or {}
    if lat.get("p99_ms") is not None:
        ok = lat["p99_ms"] < TARGETS["latency_p99_ms"]
        out.append(f"latency p99 < 1 s: {'yes' if ok else 'NO'}")
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
    for row in results.get("pages", []):
        if "median_ms" in row:
            out[f"{row['name']} [{row['persona']}] ms"] = row["median_ms"]
            # The ratio to the same run's baseline is steadier than the time on a busy machine.
            out[f"{row['name']} [{row['persona']}] x base"] = row.get("ratio")
    for row in results.get("fit", []):
        out[f"{row['name']} ms"] = row.get("median_ms")
    for row in results.get("throughput", []):
        out[f"apply/s x{row['workers']} +"] = row.get("apply_per_s")
        out[f"bare tx/s x{row['workers']} +"] = row.get("baseline_tx_per_s")
    lat = results.get("latency") or {}
    out["latency median ms"] = lat.get("median_ms")
    out["latency p99 ms"] = lat.get("p99_ms")
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
