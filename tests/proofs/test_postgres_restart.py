"""A PostgreSQL server restart in the middle of approvals and applies (the test's own server:
Debian's PostgreSQL binaries on another port, never the shared one). While it is down the web
answers 503 with Retry-After, never 500; after it returns every approval is applied exactly
once and ledger_verify passes."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import _prctl_pdeathsig
from tests.support.proofs import PrivateRedis, free_port, use_broker, wait_for
from tests.support.web import Gunicorn
from tests.support.workers import Worker

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
APPROVALS = 16

SEED = """
import json
from datetime import timedelta
from django.utils import timezone
from org.models import RoleGrant
from tests import factories
from tests.proofs.reliability import make_executives, pending_executive, token_for
research = factories.DivisionFactory(name="Research", slug="research")
team = factories.TeamFactory(division=research, name="Pretraining", slug="pretraining")
project = factories.ProjectFactory(team=team, name="Atlas")
pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=64)
rita = factories.UserFactory(username="rita")
factories.MembershipFactory(team=team, user=rita)
lead = factories.UserFactory(username="rlead")
factories.RoleGrantFactory(user=lead, role=RoleGrant.Role.DIVISION_LEAD, division=research)
(executive,) = make_executives(1, prefix="pgx")
ids = [
    pending_executive(requester=rita, project=project, pool=pool, lead=lead, gpus=2).pk
    for _ in range(%d)
]
print("SEED" + json.dumps({"ids": ids, "token": token_for(executive)}))
"""

COUNT = """
import json
from allocator.models import AllocationChange, LedgerEntry
from django.db.models import Count
grants = dict(LedgerEntry.objects.filter(kind="grant").values("change_id").annotate(n=Count("id")).values_list("change_id", "n"))
statuses = list(AllocationChange.objects.values_list("status", flat=True))
print("COUNT" + json.dumps({"statuses": statuses, "max_grants": max(grants.values(), default=0), "grants": len(grants)}))
"""


def _as_postgres():
    user = pwd.getpwnam("postgres")
    parent = os.getpid()

    def preexec():
        os.setsid()
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        # After the uid change (which clears it): die with the test process.
        _prctl_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class PrivatePostgres:
    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="allot-pg-"))
        self.data = self.dir / "data"
        self.proc: subprocess.Popen | None = None
        shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"],
            preexec_fn=_as_postgres(),
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/allot"

    def start(self) -> None:
        log = open(self.dir / "postgres.log", "a")  # noqa: SIM115 — lives with the server
        self.proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
            ],
            preexec_fn=_as_postgres(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        assert wait_for(self.answers, 30, 0.1), (self.dir / "postgres.log").read_text()[-2000:]

    def answers(self) -> bool:
        return (
            subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            ).returncode
            == 0
        )

    def stop(self) -> None:
        """A fast shutdown, as a restart or a failover does: sessions are cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def destroy(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _approve(url: str, token: str) -> int:
    request = urllib.request.Request(
        url,
        data=b'{"comment": ""}',
        method="POST",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        if error.code == 503:
            assert error.headers.get("Retry-After")
        return error.code


@pytest.mark.skipif(
    not (PG_BIN / "postgres").exists() or os.geteuid() != 0,
    reason="needs Debian's PostgreSQL 15 binaries and root (to run them as postgres)",
)
def test_postgres_restart_mid_approvals_answers_503_and_loses_nothing():
    server = PrivatePostgres()
    redis = PrivateRedis(persistence=True).start()
    server.start()
    web = worker = None
    try:
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(server.port),
                "-U",
                "postgres",
                "allot",
            ],
            check=True,
        )
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": server.url,
            "ALLOTMENT_WORKER_DB": "allot",
            "TEST_REDIS_URL": redis.url,
            "API_WRITE_RATE": "100000/min",
        }
        _manage(env, "migrate", "--noinput", "-v", "0")
        seeded = _manage(env, "shell", "-c", SEED % APPROVALS)
        data = json.loads(seeded.split("SEED", 1)[1])
        extra = {
            k: env[k]
            for k in ("DATABASE_URL", "ALLOTMENT_WORKER_DB", "TEST_REDIS_URL", "API_WRITE_RATE")
        }
        with use_broker(redis.url):
            web = Gunicorn(workers=2, threads=2, extra_env=extra).start()
            worker = Worker(name="pgrestart", extra_env=extra)
            worker.env = lambda: {**env, **worker.extra_env}
            worker.start()

            codes: list[int] = []
            pending = list(data["ids"])
            # given approvals going in one after another
            for pk in pending[:5]:
                codes.append(_approve(f"{web.url}/api/v1/requests/{pk}/approve/", data["token"]))
            # when PostgreSQL goes down in the middle of them
            server.stop()
            outage = []
            for pk in pending[5:10]:
                outage.append(_approve(f"{web.url}/api/v1/requests/{pk}/approve/", data["token"]))
            # then the web answers 503 (with Retry-After), never 500
            assert set(outage) == {503}, outage
            # when it comes back, the client retries what was refused
            server.start()
            for pk in pending[5:]:
                url = f"{web.url}/api/v1/requests/{pk}/approve/"
                code = 503
                for _ in range(30):
                    code = _approve(url, data["token"])
                    if code != 503:
                        break
                    time.sleep(0.5)
                codes.append(code)
            assert codes == [200] * APPROVALS, codes

            # then every approval is applied, each exactly once
            def counted():
                out = _manage(env, "shell", "-c", COUNT)
                return json.loads(out.split("COUNT", 1)[1])

            assert wait_for(lambda: counted()["statuses"].count("applied") == APPROVALS, 90, 2), (
                counted(),
                worker.log_tail(),
            )
            final = counted()
            assert final["max_grants"] == 1 and final["grants"] == APPROVALS, final
            assert "ledger_verify: OK." in _manage(env, "ledger_verify")
    finally:
        with contextlib.suppress(Exception):
            if worker:
                worker.kill()
        with contextlib.suppress(Exception):
            if web:
                web.stop()
        server.destroy()
        redis.destroy()
