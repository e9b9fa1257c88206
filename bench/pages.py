"""Server time of the main pages and API lists, next to the trivial baseline view.

Requests go through Django's test Client in this process: the whole middleware stack, the
session, the view, the template or serializer — everything but the socket. Each page is asked
for `repeats` times after `warmup` unmeasured requests, as the persona it is meant for; its SQL
query count is taken from one more request under CaptureQueriesContext.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from .stats import median, percentile, ratio


@dataclass
class Target:
    name: str
    path: str
    persona: str


def personas(prefix: str = "lab") -> dict:
    User = get_user_model()
    names = {
        "researcher": f"{prefix}-user0",
        "lead": f"{prefix}-lead0",
        "exec": f"{prefix}-exec",
        "ops": f"{prefix}-ops",
    }
    users = {u.username: u for u in User.objects.filter(username__in=names.values())}
    missing = [n for n in names.values() if n not in users]
    if missing:
        raise SystemExit(f"bench: the data set lacks the users {missing}")
    return {role: users[name] for role, name in names.items()}


def subjects() -> dict:
    """The ids the detail pages are measured on: a waiting request (the oldest), the busiest pool
    (most allocations still holding GPUs) and the project with the most requests."""
    from allocator.models import Allocation
    from org.models import Project
    from requests_app.models import ComputeRequest

    now = timezone.now()
    waiting = (
        ComputeRequest.objects.filter(status="waiting").order_by("pk").values_list("pk", flat=True)
    ).first()
    busiest = (
        Allocation.objects.filter(state__in=("active", "ended"), end__gt=now)
        .values("pool_id")
        .annotate(n=Count("id"))
        .order_by("-n", "pool_id")
        .values_list("pool_id", flat=True)
        .first()
    )
    project = (
        Project.objects.annotate(n=Count("requests"))
        .order_by("-n", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    return {"waiting_request": waiting, "busiest_pool": busiest, "project": project}


def targets(ids: dict) -> list[Target]:
    rows = [
        Target("overview", "/", "researcher"),
        Target("overview", "/", "exec"),
        Target("requests list", "/requests/", "researcher"),
        Target("requests list", "/requests/", "exec"),
        Target("request detail (waiting)", f"/requests/{ids['waiting_request']}/", "exec"),
        Target("approvals inbox", "/requests/inbox/", "lead"),
        Target("approvals inbox", "/requests/inbox/", "exec"),
        Target("pools", "/pools/", "exec"),
        Target("pool detail (busiest)", f"/pools/{ids['busiest_pool']}/", "exec"),
        Target("projects", "/projects/", "exec"),
        Target("project detail", f"/projects/{ids['project']}/", "exec"),
        Target("ops console", "/ops/", "ops"),
        Target("balance", "/balance/", "exec"),
    ]
    for resource in (
        "requests",
        "pools",
        "allocations",
        "capacity-changes",
        "divisions",
        "projects",
        "audit",
    ):
        rows.append(Target(f"API {resource}", f"/api/v1/{resource}/", "exec"))
    return rows


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _measure(client: Client, path: str, *, repeats: int, warmup: int) -> dict:
    """Times in milliseconds; an exception or a non-200 answer makes an error row."""
    accept = {"HTTP_ACCEPT": "application/json"} if path.startswith("/api/") else {}
    try:
        for _ in range(warmup):
            response = client.get(path, **accept)
            if response.status_code != 200:
                return {"status": response.status_code, "error": f"HTTP {response.status_code}"}
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.get(path, **accept)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                return {"status": response.status_code, "error": f"HTTP {response.status_code}"}
        with CaptureQueriesContext(connection) as captured:
            response = client.get(path, **accept)
        return {
            "status": response.status_code,
            "median_ms": median(times),
            "p95_ms": percentile(times, 95),
            "queries": len(captured.captured_queries),
            "bytes": len(response.content),
            "samples": len(times),
        }
    except Exception as exc:  # a broken page is a row in the table, not the end of the run
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {"status": 500, "error": last[:300]}


def run(*, repeats: int, warmup: int, log) -> dict:
    users = personas()
    ids = subjects()
    clients = {role: _client(user) for role, user in users.items()}
    baseline = _measure(clients["exec"], "/bench/baseline/", repeats=repeats * 2, warmup=warmup)
    if "error" in baseline:
        raise SystemExit(f"bench: the baseline view failed: {baseline['error']}")
    baseline.update(name="baseline (SELECT 1 view)", path="/bench/baseline/", persona="exec")
    log(f"baseline view: median {baseline['median_ms']:.2f} ms, {baseline['queries']} queries")
    rows = []
    for target in targets(ids):
        if "None" in target.path:
            row = {"status": 404, "error": "no such object in the data set"}
        else:
            row = _measure(clients[target.persona], target.path, repeats=repeats, warmup=warmup)
        row.update(name=target.name, path=target.path, persona=target.persona)
        if "error" not in row:
            row["ratio"] = ratio(row["median_ms"], baseline["median_ms"])
            log(
                f"{target.name} as {target.persona}: {row['median_ms']:.1f} ms "
                f"(x{row['ratio']:.1f}), {row['queries']} queries"
            )
        else:
            log(f"{target.name} as {target.persona}: ERROR {row['error']}")
        rows.append(row)
    for client in clients.values():
        client.logout()
    return {"baseline": baseline, "pages": rows, "subjects": ids}
