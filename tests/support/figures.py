"""Figures the proofs report (PROOFS.md section 3): counted during the run, printed as a table at
the end and written to test-output/figures.json.

    from tests.support import figures
    figures.add("bad inputs tried", 1)           # counters add up
    figures.record_max("max allocated/capacity", 0.97)
    figures.set("Hypothesis examples", 60)

Figures named in MUST_BE_ZERO fail the session when they are not zero (see conftest.py).
The store is per process: tests that start worker processes count what they observe from here.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"

MUST_BE_ZERO = {
    "overallocations found",
    "duplicate applications",
    "late duplicate applications",
    "double state transitions",
    "messages lost end-to-end",
    "5xx responses",
    "state changes caused by rejected input",
    "errors without a field-specific message",
    "unescaped XSS reflections",
    "HTML pages without CSP",
    "unexpected allows",
    "unexpected denies",
    "SoD / stage-skip violations",
    "BOLA leaks",
    "mass-assignment fields accepted",
    "CSRF bypasses",
    "transitions without exactly one audit row",
    "audit tamper attempts that succeeded",
    "idempotency-key duplicates created",
    "invariant violations",
    "schemathesis unique failures",
    "denied actions without security-log entry",
}

_lock = threading.Lock()
_values: dict[str, float | int | str] = {}


def add(name: str, amount: int | float = 1) -> None:
    with _lock:
        _values[name] = _values.get(name, 0) + amount


def set(name: str, value) -> None:
    with _lock:
        _values[name] = value


def record_max(name: str, value: float) -> None:
    with _lock:
        current = _values.get(name)
        if current is None or value > current:
            _values[name] = value


def snapshot() -> dict:
    with _lock:
        return dict(_values)


def failures() -> list[str]:
    values = snapshot()
    return [name for name in MUST_BE_ZERO if values.get(name, 0) not in (0, 0.0)]


def write_and_format() -> str:
    values = snapshot()
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "figures.json").write_text(json.dumps(values, indent=2, sort_keys=True))
    if not values:
        return ""
    width = max(len(name) for name in values)
    lines = [f"{'figure'.ljust(width)}  value", f"{'-' * width}  -----"]
    for name in sorted(values):
        marker = "  (must be 0)" if name in MUST_BE_ZERO else ""
        lines.append(f"{name.ljust(width)}  {values[name]}{marker}")
    return "\n".join(lines)
