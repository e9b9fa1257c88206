"""gunicorn's configuration (`gunicorn -c config/gunicorn.py config.wsgi`), read from the
environment so the compose recipe, the Kubernetes manifests and `dev.py run --prod-like` share it.

- workers x threads (gthread): WEB_CONCURRENCY processes, GUNICORN_THREADS threads each; the app
  keeps no state in memory, so any number of processes on any number of machines is fine.
- timeouts: a request that takes longer than GUNICORN_TIMEOUT is killed with its worker; on
  SIGTERM (a rolling deploy) or SIGHUP (reload) workers finish in-flight requests for up to
  GUNICORN_GRACEFUL_TIMEOUT seconds before they are stopped.
- max_requests (with jitter) recycles workers now and then, so a slow leak never builds up.
- metrics: prometheus_client's multiprocess folder (PROMETHEUS_MULTIPROC_DIR) is emptied when
  the arbiter starts, and a dead worker's files are marked so its live gauges drop out.
"""

import os
import shutil
from pathlib import Path

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))
# Heartbeat files in memory, not on a possibly slow container disk.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None
# django-structlog logs every request as JSON; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Behind a proxy or ingress that sets X-Forwarded-Proto (settings.SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "allotment-web"


def on_starting(server):
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        # Files of a previous run would add its counts to this one's.
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
