"""L1 (PROOFS.md section 2.3): bounded mixed load on loopback. A live server, two real workers,
six client threads with distinct users (three researchers, a division lead, two executives) for
~30 s: reads (request list and detail, pools), creates and submits, approvals at both stages,
withdrawals and invalid input. Reported: requests, req/s, p50/p95/p99, 4xx/5xx, the time the
workers need to drain, invariant violations during (sampler) and after. No wall-clock assertion
except a generous drain deadline; 5xx must be 0."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta

import pytest

from allocator.models import AllocationChange
from tests import factories
from tests.proofs.reliability import make_executives, token_for
from tests.proofs.test_concurrency_proofs import Sampler
from tests.support import figures, invariants
from tests.support.proofs import wait_for

pytestmark = [pytest.mark.load, pytest.mark.worker, pytest.mark.slow]

DURATION = float(os.environ.get("ALLOTMENT_L1_SECONDS", "30"))
DRAIN_DEADLINE = 120  # seconds: generous (a shared 2-core box), the only timing assertion


class Client:
    """A loopback HTTP client with a token; records (code, seconds) of every call."""

    def __init__(self, base: str, token: str, record):
        self.base = base
        self.token = token
        self.record = record

    def call(self, method: str, path: str, body=None, *, kind: str):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                code, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            code, raw = error.code, error.read()
        self.record(kind, code, time.monotonic() - started)
        try:
            return code, json.loads(raw or b"null")
        except ValueError:
            return code, None


def _body(project, pool, rng, **overrides):
    start = factories.in_days(rng.randint(1, 20))
    body = {
        "project": project.pk,
        "pool": pool.pk,
        "gpus": rng.randint(1, 8),
        "start": start.isoformat(),
        "end": (start + timedelta(days=rng.randint(3, 14))).isoformat(),
        "kind": "new",
        "priority": "normal",
        "flexible_start": False,
        "goal": "Train the next model.",
        "expected_outcome": "A checkpoint that beats the baseline.",
        "size_rationale": "Sized to the data.",
        "impact_if_denied": "The milestone slips.",
    }
    body.update(overrides)
    return body


INVALID = [
    {"gpus": -1},
    {"gpus": "eight"},
    {"start": "2026-02-30"},
    {"pool": 2**63},
    {"goal": "x" * 100_000},
]


def _researcher(client: Client, rng, stop, project, pool, mine: list[int]):
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.20:
            client.call("GET", "/api/v1/requests/?page_size=50", kind="read")
        elif roll < 0.35 and mine:
            client.call("GET", f"/api/v1/requests/{rng.choice(mine)}/", kind="read")
        elif roll < 0.50:
            path = "/api/v1/pools/" if rng.random() < 0.5 else f"/api/v1/pools/{pool.pk}/"
            client.call("GET", path, kind="read")
        elif roll < 0.75:
            code, data = client.call(
                "POST", "/api/v1/requests/", _body(project, pool, rng), kind="create"
            )
            if code == 201 and data:
                mine.append(data["id"])
                client.call("POST", f"/api/v1/requests/{data['id']}/submit/", {}, kind="submit")
        elif roll < 0.85 and mine:
            client.call(
                "POST", f"/api/v1/requests/{rng.choice(mine)}/withdraw/", {}, kind="withdraw"
            )
        else:
            bad = {**_body(project, pool, rng), **rng.choice(INVALID)}
            client.call("POST", "/api/v1/requests/", bad, kind="invalid")


def _decider(client: Client, rng, stop, stage: str, pool):
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.55:
            code, data = client.call(
                "GET", f"/api/v1/requests/?status={stage}&page_size=20", kind="read"
            )
            for item in (data or {}).get("results", [])[:3] if code == 200 else []:
                decision = "approve" if rng.random() < 0.85 else "reject"
                client.call(
                    "POST",
                    f"/api/v1/requests/{item['id']}/{decision}/",
                    {"comment": "Load test decision."},
                    kind="decide",
                )
        elif roll < 0.85:
            client.call("GET", f"/api/v1/pools/{pool.pk}/", kind="read")
        else:
            # invalid: an id nobody can see
            client.call("POST", "/api/v1/requests/999999999/approve/", {}, kind="invalid")
        time.sleep(0.05)


def _stuck() -> list:
    return list(
        AllocationChange.objects.filter(status="pending").values(
            "pk", "attempts", "last_error", "dispatched_at", "kind"
        )
    )


def _percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def test_l1_bounded_mixed_load(
    live_crew, live_server, settings, pool, project, team, division_lead
):
    # given distinct users per thread (throttles are A5's subject, so lifted here)
    settings.API_WRITE_RATE = "100000/min"
    researchers = []
    for i in range(3):
        user = factories.UserFactory(username=f"load{i}")
        factories.MembershipFactory(team=team, user=user)
        researchers.append(user)
    executives = make_executives(2, prefix="lexec")
    samples: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def record(kind, code, seconds):
        with lock:
            samples.append((kind, code, seconds))

    stop = threading.Event()
    base = live_server.url
    workers = []
    for i, user in enumerate(researchers):
        client = Client(base, token_for(user), record)
        args = (client, random.Random(100 + i), stop, project, pool, [])
        workers.append(threading.Thread(target=_researcher, args=args, daemon=True))
    for stage, user, seed in (
        ("pending_division", division_lead, 200),
        ("pending_executive", executives[0], 201),
        ("pending_executive", executives[1], 202),
    ):
        client = Client(base, token_for(user), record)
        args = (client, random.Random(seed), stop, stage, pool)
        workers.append(threading.Thread(target=_decider, args=args, daemon=True))
    sampler = Sampler()
    sampler.start()

    # when the six threads run for DURATION seconds against the live server and two workers
    started = time.monotonic()
    for t in workers:
        t.start()
    time.sleep(DURATION)
    stop.set()
    for t in workers:
        t.join(60)
    elapsed = time.monotonic() - started

    # then the workers drain what was approved within a generous deadline
    drain_started = time.monotonic()
    drained = wait_for(
        lambda: not AllocationChange.objects.filter(status="pending").exists(), DRAIN_DEADLINE, 0.2
    )
    drain_seconds = time.monotonic() - drain_started
    sampler.stop.set()
    sampler.join(10)

    codes = Counter(code for _, code, _ in samples)
    kinds = Counter(kind for kind, _, _ in samples)
    latencies = sorted(seconds for _, _, seconds in samples)
    server_errors = sum(n for code, n in codes.items() if code >= 500)
    client_errors = sum(n for code, n in codes.items() if 400 <= code < 500)
    violations = invariants.all_violations()
    figures.set("L1 requests", len(samples))
    figures.set("L1 requests by kind", dict(sorted(kinds.items())))
    figures.set("L1 status codes", {str(k): v for k, v in sorted(codes.items())})
    figures.set("L1 throughput req/s", round(len(samples) / elapsed, 1))
    for q in (0.50, 0.95, 0.99):
        figures.set(f"L1 latency p{int(q * 100)} ms", round(_percentile(latencies, q) * 1000))
    figures.set("L1 4xx", client_errors)
    figures.set("L1 5xx", server_errors)
    figures.set("L1 queue drain s", round(drain_seconds, 1))
    figures.set("L1 changes applied", AllocationChange.objects.filter(status="applied").count())
    figures.record_max("max allocated/capacity observed", round(sampler.max_ratio, 3))
    figures.add("overallocations found", sampler.over + len(invariants.over_allocations()))
    figures.add("invariant violations", len(violations))

    assert server_errors == 0, codes
    assert drained, (_stuck(), live_crew.logs())
    assert kinds["invalid"] and codes.get(400), codes  # the invalid input was really sent
    assert kinds["decide"] and kinds["create"]
    assert sampler.over == 0
    assert violations == [], violations
