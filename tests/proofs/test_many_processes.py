"""Many processes (issue: "ready to operate"): three gunicorn servers on three ports and three
Celery workers, on one PostgreSQL and one Redis, with approvals, releases and capacity changes
racing across the servers, and the broker restarted (AOF on) in the middle. The invariant
holds at every sample and at the end, every approved change is settled exactly once, and no
server answers 5xx."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from allocator.models import Allocation, AllocationChange
from org.models import RoleGrant
from requests_app.models import ComputeRequest
from tests import factories
from tests.proofs.reliability import make_executives, pending_executive, token_for
from tests.support import figures, invariants
from tests.support.proofs import PrivateRedis, account, sweep_now, use_broker, wait_for
from tests.support.web import Gunicorn
from tests.support.workers import Worker, start_all

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.worker]

REQUESTS = 36


def _call(url: str, token: str, body: dict) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    for _ in range(40):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (ConnectionError, urllib.error.URLError):
            time.sleep(0.25)  # a server busy restarting a worker: try again
    return 0


@pytest.fixture
def cluster(transactional_db):
    redis = PrivateRedis(persistence=True).start()
    env = {"TEST_REDIS_URL": redis.url, "API_WRITE_RATE": "100000/min"}
    servers = [Gunicorn(workers=1, threads=4, extra_env=env) for _ in range(3)]
    workers = [Worker(name=f"many{i}", extra_env=env) for i in range(3)]
    try:
        with use_broker(redis.url):
            for server in servers:
                server.start()
            start_all(workers)
            yield servers, workers, redis
    finally:
        for worker in workers:
            worker.kill()
        for server in servers:
            server.stop()
        redis.destroy()


def test_three_servers_three_workers_race_and_a_broker_restart(
    cluster, pool, project, team, requester, division_lead
):
    servers, workers, redis = cluster
    rng = random.Random(17)
    # given requests at executive review that together ask for more than the pool holds
    executives = make_executives(3, prefix="mp")
    ops = factories.UserFactory(username="mpops")
    factories.RoleGrantFactory(user=ops, role=RoleGrant.Role.COMPUTE_OPS)
    reqs = [
        pending_executive(
            requester=requester,
            project=project,
            pool=pool,
            lead=division_lead,
            gpus=rng.randint(1, 6),
            start=timezone.now(),
        )
        for _ in range(REQUESTS)
    ]
    codes: Counter = Counter()
    lock = threading.Lock()

    def record(kind, code):
        with lock:
            codes[(kind, code)] += 1

    def approver(i):
        token = token_for(executives[i % len(executives)])
        for req in reqs[i::6]:
            server = servers[(req.pk + i) % 3]
            record("approve", _call(f"{server.url}/api/v1/requests/{req.pk}/approve/", token, {}))

    stop = threading.Event()

    def releaser():
        token = token_for(requester)
        while not stop.is_set():
            held = list(Allocation.objects.filter(state="active").values_list("pk", flat=True)[:3])
            for pk in held[:1]:
                server = rng.choice(servers)
                record(
                    "release", _call(f"{server.url}/api/v1/allocations/{pk}/release/", token, {})
                )
            stop.wait(0.3)

    def capacity():
        token = token_for(ops)
        for n in range(8):
            server = servers[n % 3]
            body = {
                "pool": pool.pk,
                "kind": "arrival" if n % 2 == 0 else "decommission",
                "delta": 4 if n % 2 == 0 else -4,
                "effective_at": (timezone.now() + timedelta(seconds=1)).isoformat(),
                "note": "many-process proof",
            }
            record("capacity", _call(f"{server.url}/api/v1/capacity-changes/", token, body))
            time.sleep(0.2)

    threads = [threading.Thread(target=approver, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=releaser), threading.Thread(target=capacity)]
    over_seen = 0
    # when they all run at once, and the broker restarts halfway
    for t in threads:
        t.start()
    restarted = False
    while any(t.is_alive() for t in threads[:6]):
        over_seen += len(invariants.over_allocations())
        if (
            not restarted
            and sum(n for (k, _), n in codes.items() if k == "approve") >= REQUESTS // 2
        ):
            redis.shutdown()  # graceful: the AOF is written
            redis.start()
            restarted = True
            figures.add("Redis restarts survived")
        time.sleep(0.1)
    for t in threads[:6]:
        t.join(60)
    # then every approved change is settled, re-sent by the sweep where a message was lost
    change_ids = list(
        ComputeRequest.objects.filter(
            pk__in=[r.pk for r in reqs], change__isnull=False
        ).values_list("change_id", flat=True)
    )

    def settled():
        sweep_now()
        return not AllocationChange.objects.filter(pk__in=change_ids, status="pending").exists()

    assert wait_for(settled, 90, 1), "\n".join(w.log_tail(1500) for w in workers)
    stop.set()
    for t in threads[6:]:
        t.join(60)
    assert wait_for(settled, 60, 1)
    over_seen += len(invariants.over_allocations())

    server_errors = {key: n for key, n in codes.items() if key[1] >= 500 or key[1] == 0}
    figures.set("many-process calls", {f"{k} {c}": n for (k, c), n in sorted(codes.items())})
    figures.add("many-process 5xx", sum(server_errors.values()))
    figures.add("overallocations found", over_seen)
    assert restarted
    assert server_errors == {}, codes
    assert codes[("approve", 200)] == REQUESTS, codes  # every approval won exactly once
    assert codes[("capacity", 201)] >= 4, codes  # the arrivals at least
    assert over_seen == 0
    result = account(change_ids, expect=("applied", "waiting"))
    assert result["lost"] == [] and result["duplicates"] == [], result
    assert result["violations"] == [], result["violations"]
