"""HTTP throughput and latency through gunicorn, as a lab's scripts and dashboards see the API.

gunicorn runs the production configuration (config/gunicorn.py: gthread workers) with the bench
settings on the bench database, `processes` worker processes, on a free port of 127.0.0.1; the
bench starts it in its own session and stops it (and it dies with the bench if the bench is
killed: bench/processes.py). Worker recycling (max_requests) is off so no run pays for a restart.

The load is closed-loop: C client threads, each with one kept-alive HTTP/1.1 connection and the
executive's API token, send GET after GET for `seconds` (after `warmup` seconds not counted).
Requests per second = 200 answers completed in the window / the window; p50 and p99 over the
latency of every request started in the window (waited for to the end, so a client the server
leaves waiting counts with its whole wait). Every endpoint is run the same way as the trivial token-authenticated view
(bench/views.py `api_baseline`), whose figures are the baseline. The clients share the machine
(and Python's GIL) with the server; the baseline pays that too.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from .processes import die_with_parent, stop_group
from .stats import median, percentile, ratio

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
BASELINE_PATH = "/bench/api-baseline/"
PATHS = (
    ("trivial view (token)", BASELINE_PATH),
    ("API pools", "/api/v1/pools/"),
    ("API requests", "/api/v1/requests/"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_token(username: str = "lab-exec") -> str:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.get(username=username)
    return Token.objects.get_or_create(user=user)[0].key


class Server:
    """`gunicorn -c config/gunicorn.py config.wsgi` with the bench settings, in its own session."""

    def __init__(self, *, db_name: str, processes: int, threads: int):
        self.port = free_port()
        self.db_name = db_name
        self.processes = processes
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        self.log_path = OUTPUT / f"bench-gunicorn-{self.port}.log"

    def start(self, *, token: str, timeout: float = 60) -> None:
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log_path.read_text()[-2000:]}")
            try:
                status, _ = get_once(self.port, BASELINE_PATH, token)
            except OSError:
                time.sleep(0.2)
                continue
            if status != 200:
                raise RuntimeError(f"gunicorn answers HTTP {status} on {BASELINE_PATH}")
            return
        raise RuntimeError(f"gunicorn not answering within {timeout} s")

    def launch(self) -> subprocess.Popen:
        OUTPUT.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.bench",
            "BENCH_DATABASE_NAME": self.db_name,
            "BENCH_REDIS_URL": settings.BENCH_REDIS_URL,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(self.processes),
            "GUNICORN_THREADS": str(self.threads),
            "GUNICORN_MAX_REQUESTS": "0",
            "GUNICORN_LOG_LEVEL": "warning",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = open(self.log_path, "w")  # noqa: SIM115 — kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=30)


def _headers(token: str) -> dict:
    return {"Authorization": f"Token {token}", "Accept": "application/json"}


def get_once(port: int, path: str, token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=_headers(token))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def load(*, port: int, path: str, token: str, clients: int, seconds: float, warmup: float) -> dict:
    """C threads GET `path` back to back. Requests/s counts the answers completed inside the
    window; the latencies are those of every request *started* inside it, however long it took
    (a request still running at the end is waited for), so slow answers are not left out."""
    headers = _headers(token)
    begin = time.monotonic() + warmup
    end = begin + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    completed = [0]
    start_together = threading.Barrier(clients)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        seen: dict[str, int] = {}
        done_in_window = 0
        start_together.wait()
        try:
            while (now := time.monotonic()) < end:
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    outcome = str(response.status)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # reconnects on the next request
                    outcome = type(exc).__name__
                done = time.monotonic()
                if begin <= done <= end and outcome == "200":
                    done_in_window += 1
                if begin <= now:
                    mine.append((done - now) * 1000)
                    seen[outcome] = seen.get(outcome, 0) + 1
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                completed[0] += done_in_window
                for key, n in seen.items():
                    statuses[key] = statuses.get(key, 0) + n

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + warmup + 120)
    return {
        "clients": clients,
        "seconds": seconds,
        "answers": sum(statuses.values()),
        "statuses": statuses,
        "per_s": completed[0] / seconds,
        "p50_ms": median(latencies),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
    }


def run(
    *,
    db_name: str,
    processes: int,
    threads: int,
    client_counts: list[int],
    seconds: float,
    warmup: float,
    log,
) -> dict:
    token = api_token()
    server = Server(db_name=db_name, processes=processes, threads=threads)
    result: dict = {"processes": processes, "threads": threads, "rows": []}
    try:
        server.start(token=token)
        log(f"gunicorn up on port {server.port}: {processes} processes x {threads} threads")
        for clients in client_counts:
            base = None
            for name, path in PATHS:
                row = {"name": name, "path": path} | load(
                    port=server.port,
                    path=path,
                    token=token,
                    clients=clients,
                    seconds=seconds,
                    warmup=warmup,
                )
                if path == BASELINE_PATH:
                    base = row
                elif base:
                    row["rate_ratio"] = ratio(row["per_s"], base["per_s"])
                    row["p99_ratio"] = ratio(row["p99_ms"], base["p99_ms"])
                if set(row["statuses"]) - {"200"}:
                    row["error"] = f"answers {row['statuses']}"
                log(
                    f"http {name} at {clients} clients: {row['per_s']:.1f}/s, p50 "
                    f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms {row['statuses']}"
                )
                result["rows"].append(row)
    finally:
        server.stop()
    return result
