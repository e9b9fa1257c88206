"""A real gunicorn (config/gunicorn.py) serving the app on the test database, started as a
subprocess that dies with the test process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from django.db import connection

from tests.support.processes import die_with_parent
from tests.support.proofs import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"


class Gunicorn:
    def __init__(self, *, workers: int = 2, threads: int = 2, extra_env=None):
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        OUTPUT.mkdir(exist_ok=True)
        self.log_path = OUTPUT / f"gunicorn-{self.port}-{connection.settings_dict['NAME']}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Gunicorn:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "ALLOTMENT_WORKER_DB": connection.settings_dict["NAME"],
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_THREADS": str(self.threads),
            **self.extra_env,
        }
        log = open(self.log_path, "a")  # noqa: SIM115 — lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        if not wait_for(self.answers, timeout, 0.1):
            self.stop()
            raise RuntimeError(f"gunicorn did not start: {self.log_tail()}")
        return self

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
