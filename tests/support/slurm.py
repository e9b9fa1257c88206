"""A real one-machine Slurm 22.05 cluster for the connector's tests: a private munged, a private
MariaDB, slurmdbd, slurmctld and two slurmd nodes (n1, n2) with 8 fake GPUs each, all on free
ports under one fresh folder (ENV-NOTES section 7 has the traps this avoids).

Every daemon runs in the foreground as a child of the test process, with PR_SET_PDEATHSIG so it
dies with it even after a SIGKILL; `stop()` sends SIGTERM to the recorded pids and waits.
`python3 dev.py test` installs the Debian packages (dev.ensure_slurm); without them, or without
root, `SlurmCluster.unavailable()` says why and the tests skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PROGRAMS = (
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sacctmgr",
    "sbatch",
    "scontrol",
)
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
MYSQL_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm/accounting_storage_mysql.so")
GPUS_PER_NODE = 8
NODES = ("n1", "n2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG (1): the kernel sends SIGTERM when the test process goes, however it goes.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    os.setsid()


class SlurmCluster:
    cluster_name = "allotmenttest"
    partition = "gpu"

    def __init__(self, base: Path | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix="allotment-slurm-"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {
            "mysql": _free_port(),
            "dbd": _free_port(),
            "ctld": _free_port(),
            **{f"slurmd-{node}": _free_port() for node in NODES},
        }
        self.host = socket.gethostname().split(".")[0]

    # --- environment ------------------------------------------------------------------------

    @staticmethod
    def unavailable() -> str | None:
        """Why no cluster can run here, or None."""
        if os.geteuid() != 0:
            return "the Slurm tests run their own slurmctld/slurmd and need root"
        missing = [p for p in PROGRAMS if not shutil.which(p, path=PATH)]
        if not MYSQL_PLUGIN.exists():
            missing.append("slurm-wlm-mysql-plugin")
        if missing:
            return (
                "Slurm is not installed (missing: "
                + ", ".join(missing)
                + "); `python3 dev.py test` installs it with apt as root"
            )
        return None

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.base / "munge" / "munge.socket.2"

    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": PATH}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> SlurmCluster:
        try:
            self._write_files()
            self._start_munge()
            self._start_mariadb()
            self._start_slurmdbd()
            self.start_controller()
            for node in NODES:
                self._spawn(f"slurmd-{node}", ["slurmd", "-D", "-N", node])
            self.wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a paused daemon cannot act on SIGTERM
        for name in reversed(list(self.procs)):
            self._terminate(name)
        self.procs.clear()

    def stop_controller(self) -> None:
        """The scheduler goes down (the fault tests); its state stays in StateSaveLocation."""
        self._terminate("slurmctld")
        self.procs.pop("slurmctld", None)

    def start_controller(self, timeout: float = 30) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D"])
        self._wait(lambda: self.run("scontrol", "ping").returncode == 0, timeout, "slurmctld")

    def stop_accounting(self) -> None:
        """slurmdbd down: sacctmgr cannot read or change accounts."""
        self._terminate("slurmdbd")
        self.procs.pop("slurmdbd", None)

    def start_accounting(self) -> None:
        self._start_slurmdbd()

    def stop_munge(self) -> None:
        self._terminate("munged")
        self.procs.pop("munged", None)

    def start_munge(self) -> None:
        self._start_munge()

    def pause(self, name: str) -> None:
        """A hung daemon: alive, its port open, answering nothing (SIGSTOP)."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def _terminate(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.base / "log" / f"{name}.out", "ab")  # noqa: SIM115 — the child's output
        proc = subprocess.Popen(
            argv,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            **kwargs,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}): {self.log_tail(name)}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s: {self.log_tail(what)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        texts = []
        for path in (self.base / "log").glob(f"{name}*"):
            texts.append(
                f"--- {path.name}\n"
                + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            )
        return "\n".join(texts)

    # --- the daemons ------------------------------------------------------------------------

    def _start_munge(self) -> None:
        key = self.base / "munge" / "munge.key"
        if not key.exists():  # a restarted munged keeps the key the daemons know
            key.write_bytes(secrets.token_bytes(1024))
            key.chmod(0o400)
        self.munge_socket.unlink(missing_ok=True)
        self._spawn(
            "munged",
            [
                "munged",
                "-F",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.base / 'munge' / 'munged.pid'}",
                f"--log-file={self.base / 'log' / 'munged.log'}",
                f"--seed-file={self.base / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(self.munge_socket.exists, 10, "munged")

    def _start_mariadb(self) -> None:
        datadir = self.base / "mysql"
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=120,
        )
        init = self.base / "etc" / "mysql-init.sql"
        init.write_text(
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';\n"
            "GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';\n"
        )
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--port={self.ports['mysql']}",
                "--bind-address=127.0.0.1",
                f"--socket={self.base / 'mysql.sock'}",
                f"--pid-file={self.base / 'mysql.pid'}",
                "--user=root",
                "--skip-log-bin",
                f"--init-file={init}",
                "--innodb-buffer-pool-size=64M",
            ],
        )

        def answers() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.ports["mysql"])) == 0

        self._wait(answers, 60, "mariadbd")

    def _start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", ["slurmdbd", "-D"])

        def answers() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.ports["dbd"])) == 0

        self._wait(answers, 30, "slurmdbd")

    def wait_idle(self, timeout: float = 60) -> None:
        def idle() -> bool:
            result = self.run("sinfo", "-h", "-N", "-o", "%N %t")
            states = dict(line.split() for line in result.stdout.split("\n") if line.strip())
            return all(states.get(node) == "idle" for node in NODES)

        self._wait(idle, timeout, "slurmd")

    # --- files ---------------------------------------------------------------------------

    def _write_files(self) -> None:
        for folder in ("etc", "log", "state", "spool", "munge", "dev"):
            (self.base / folder).mkdir(parents=True, exist_ok=True)
        (self.base / "munge").chmod(0o755)  # munge clients refuse a socket in a private folder
        self.base.chmod(0o755)
        gres_lines = ["AutoDetect=off"]
        node_lines = []
        for node in NODES:
            for i in range(GPUS_PER_NODE):
                link = self.base / "dev" / f"{node}-gpu{i}"
                if not link.exists():
                    link.symlink_to("/dev/null")
            gres_lines.append(
                f"NodeName={node} Name=gpu File={self.base / 'dev'}/{node}-gpu[0-{GPUS_PER_NODE - 1}]"
            )
            node_lines.append(
                f"NodeName={node} NodeHostname={self.host} NodeAddr=127.0.0.1 "
                f"Port={self.ports[f'slurmd-{node}']} CPUs=16 RealMemory=32000 "
                f"Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN"
            )
        (self.base / "etc" / "gres.conf").write_text("\n".join(gres_lines) + "\n")
        b = self.base
        slurm_conf = f"""
ClusterName={self.cluster_name}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ports["ctld"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=2
MinJobAge=5
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["dbd"]}
AccountingStoragePass={self.munge_socket}
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
{chr(10).join(node_lines)}
PartitionName={self.partition} Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""
        self.conf.write_text(slurm_conf.lstrip())
        dbd = self.base / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["dbd"]}
SlurmUser=root
PidFile={b}/slurmdbd.pid
LogFile={b}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mysql"]}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
        )
        dbd.chmod(0o600)

    # --- what tests do on the cluster -------------------------------------------------------

    def run(self, *argv: str, check: bool = False, timeout: float = 30):
        return subprocess.run(
            list(argv),
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def sacctmgr(self, *args: str):
        return self.run("sacctmgr", "-i", *args, check=True)

    def submit(
        self, *, account: str, gpus: int, seconds: int = 300, user: str | None = None
    ) -> int:
        """`sbatch --gres=gpu:N --wrap 'sleep …'` under `account`; the job id."""
        argv = [
            "sbatch",
            "--parsable",
            f"--account={account}",
            f"--partition={self.partition}",
            f"--gres=gpu:{gpus}",
            "--cpus-per-task=1",
            "--mem=100",
            f"--output={self.base / 'log' / 'job-%j.out'}",
            "--wrap",
            f"sleep {seconds}",
        ]
        if user:
            argv.insert(1, f"--uid={user}")
        result = self.run(*argv)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict:
        """State and reason of one job, as squeue --json has it."""
        # squeue --json of 22.05 ignores -j: pick the job out of the list.
        result = self.run("squeue", "--json")
        for job in json.loads(result.stdout or "{}").get("jobs", []):
            if job.get("job_id") == job_id:
                return job
        return {"job_state": "GONE", "state_reason": ""}

    def wait_job_state(self, job_id: int, states: set[str], timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["job_state"] in states:
                return job
            time.sleep(0.3)
        raise AssertionError(
            f"job {job_id} is {job['job_state']} ({job.get('state_reason')}), not {states}"
        )

    def wait_job_waiting(
        self, job_id: int, reason: str = "AssocGrpGRES", timeout: float = 20
    ) -> dict:
        """The job is pending for `reason` (a just-submitted job reads "None" until the
        scheduler has looked at it)."""
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["job_state"] == "PENDING" and job.get("state_reason") == reason:
                return job
            time.sleep(0.3)
        raise AssertionError(
            f"job {job_id} is {job['job_state']} ({job.get('state_reason')}), not waiting for {reason}"
        )

    def cancel_all(self) -> None:
        self.run("scancel", "--full", "-u", "root")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            result = self.run("squeue", "-h", "-o", "%i")
            if not result.stdout.strip():
                return
            time.sleep(0.3)


# --- pytest fixtures (made visible to every test by tests/conftest.py) -------------------------


@pytest.fixture(scope="session")
def slurm_cluster():
    """One private cluster per test session, started on first use."""
    why = SlurmCluster.unavailable()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster):
    """The cluster, emptied after each test: daemons a fault test stopped are back, jobs
    cancelled, every account but root deleted."""
    yield slurm_cluster
    for proc in slurm_cluster.procs.values():
        proc.send_signal(signal.SIGCONT)
    if "munged" not in slurm_cluster.procs:
        slurm_cluster.start_munge()
    if "slurmdbd" not in slurm_cluster.procs:
        slurm_cluster.start_accounting()
    if "slurmctld" not in slurm_cluster.procs:
        slurm_cluster.start_controller()
    slurm_cluster.cancel_all()
    out = slurm_cluster.run("sacctmgr", "-n", "-P", "show", "account", "format=Account").stdout
    names = [n for n in out.split() if n and n != "root"]
    if names:
        slurm_cluster.run("sacctmgr", "-i", "delete", "account", "name=" + ",".join(names))
