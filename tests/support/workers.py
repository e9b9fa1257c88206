"""Real `celery worker` processes for end-to-end tests: started as subprocesses on the test
database and the test Redis, waited for, and killed by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.support.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"


class Worker:
    def __init__(self, *, concurrency: int = 1, name: str | None = None, extra_env=None):
        self.name = name or f"w-{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        OUTPUT.mkdir(exist_ok=True)
        # Per test database: parallel sessions (own databases) never mix their workers' logs.
        self.log_path = OUTPUT / f"worker-{self.name}-{connection.settings_dict['NAME']}.log"

    def env(self) -> dict:
        env = {**os.environ, **self.extra_env}
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        env["ALLOTMENT_WORKER_DB"] = connection.settings_dict["NAME"]
        return env

    def start(self, timeout: float = 30) -> Worker:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> Worker:
        """Start the process without waiting for it to answer (see start_all)."""
        log = open(self.log_path, "a")  # noqa: SIM115 — kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "INFO",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        return self

    def wait_ready(self, timeout: float) -> None:
        from config.celery import app

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            replies = app.control.ping(
                destination=[f"{self.name}@{os.uname().nodename}"], timeout=0.5
            )
            if replies:
                return
        raise RuntimeError(f"worker not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """Pids of the prefork pool children (from /proc)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.pid:
                        found.append(int(entry.name))
        return found

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (main process and pool children)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def purge_test_broker() -> None:
    """Drop messages a previous run left in the test Redis database."""
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def start_all(workers: list[Worker], timeout: float = 45) -> list[Worker]:
    """Launch several workers at once, then wait for each: boots overlap."""
    for w in workers:
        w.launch()
    for w in workers:
        w.wait_ready(timeout)
    return workers
