"""The Slurm driver: the scheduler's command-line tools, each run with a timeout and its output
captured. Slurm 22.05 has no usable Python binding (pyslurm needs 25.11) and slurmrestd cannot
set account limits, so this is the interface: `sacctmgr -i -n -P` for the account tree and
limits, `squeue --json` for running jobs, `sacct --json` for what jobs used.

Every method raises SlurmError (with the command and its output) on a failure or a timeout; the
callers keep the intent pending and show the error to compute ops.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings


class SlurmError(Exception):
    def __init__(self, message: str, *, command: str = "", output: str = ""):
        super().__init__(message)
        self.command = command
        self.output = output


@dataclass
class AccountState:
    name: str
    parent: str
    limit: int | None  # GrpTRES for this connector's GRES; None: no limit set
    users: set[str] = field(default_factory=set)


def parse_tres(text: str) -> dict[str, int]:
    """`cpu=1,gres/gpu=4,gres/gpu:h100=2` -> {"cpu": 1, "gres/gpu": 4, "gres/gpu:h100": 2}."""
    values = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        try:
            values[key.strip()] = int(value.strip())
        except ValueError:
            continue
    return values


class Slurm:
    def __init__(
        self,
        *,
        cluster: str,
        partition: str,
        gres: str,
        slurm_conf: str = "",
        command_prefix: str = "",
        timeout: float | None = None,
    ):
        self.cluster = cluster
        self.partition = partition
        self.gres = gres
        self.tres = f"gres/{gres}"
        self.slurm_conf = slurm_conf
        self.prefix = shlex.split(command_prefix) if command_prefix else []
        self.timeout = timeout or settings.ALLOTMENT_CONNECTORS["COMMAND_TIMEOUT_SECONDS"]

    @classmethod
    def for_connector(cls, connector) -> Slurm:
        return cls(
            cluster=connector.cluster,
            partition=connector.partition,
            gres=connector.gres,
            slurm_conf=connector.slurm_conf,
            command_prefix=connector.command_prefix,
        )

    # --- running commands ----------------------------------------------------------------

    def run(self, *argv: str) -> str:
        command = [*self.prefix, *argv]
        shown = shlex.join(command)
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        try:
            result = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as timeout:
            partial = [p for p in (timeout.stdout, timeout.stderr) if p]
            said = "".join(
                p.decode(errors="replace") if isinstance(p, bytes) else p for p in partial
            )
            raise SlurmError(
                f"timed out after {self.timeout:g} s", command=shown, output=said[-4000:]
            ) from timeout
        except OSError as missing:
            raise SlurmError(str(missing), command=shown) from missing
        if result.returncode != 0:
            said = (result.stdout + result.stderr).strip()
            raise SlurmError(f"exit status {result.returncode}", command=shown, output=said[-4000:])
        return result.stdout

    def sacctmgr(self, *args: str) -> str:
        return self.run("sacctmgr", "-i", "-n", "-P", *args)

    # --- reading ------------------------------------------------------------------------

    def accounts(self) -> dict[str, AccountState]:
        """Every account of the cluster with its parent, this GRES's limit and its users."""
        text = self.sacctmgr(
            "show", "assoc", f"cluster={self.cluster}", "format=Account,User,ParentName,GrpTRES"
        )
        accounts: dict[str, AccountState] = {}
        users: list[tuple[str, str]] = []
        for line in text.splitlines():
            parts = line.split("|")
            if len(parts) < 4:
                continue
            account, user, parent, grp_tres = (p.strip() for p in parts[:4])
            if user:
                users.append((account, user))
                continue
            accounts[account] = AccountState(
                name=account, parent=parent, limit=parse_tres(grp_tres).get(self.tres)
            )
        for account, user in users:
            if account in accounts:
                accounts[account].users.add(user)
        return accounts

    def running_gpus(self) -> dict[str, int]:
        """GPUs of this GRES held by running jobs, per account (any partition: GrpTRES counts
        the account's jobs everywhere on the cluster)."""
        text = self.run("squeue", "--json")
        try:
            jobs = json.loads(text).get("jobs", [])
        except ValueError as bad:
            raise SlurmError(
                "squeue printed no JSON", command="squeue --json", output=text[-2000:]
            ) from bad
        use: dict[str, int] = {}
        for job in jobs:
            if job.get("job_state") != "RUNNING":
                continue
            gpus = parse_tres(job.get("tres_alloc_str", "")).get(self.tres, 0)
            if gpus:
                use[job["account"]] = use.get(job["account"], 0) + gpus
        return use

    def running_jobs(self, account: str) -> list[dict]:
        text = self.run("squeue", "--json")
        jobs = []
        for job in json.loads(text).get("jobs", []):
            if job.get("account") == account and job.get("job_state") == "RUNNING":
                gpus = parse_tres(job.get("tres_alloc_str", "")).get(self.tres, 0)
                if gpus:
                    jobs.append(
                        {
                            "job_id": job["job_id"],
                            "gpus": gpus,
                            "start_time": job.get("start_time", 0),
                        }
                    )
        return jobs

    def job_usage(self, *, start: datetime, end: datetime, accounts: list[str]) -> list[dict]:
        """Jobs of these accounts that ran between start and end (`sacct --json`): account,
        GPUs, start and end as epoch seconds (end 0 while running)."""
        if not accounts:
            return []
        text = self.run(
            "sacct",
            "--json",
            "--allusers",
            "-X",
            f"--accounts={','.join(accounts)}",
            f"--starttime={start:%Y-%m-%dT%H:%M:%S}",
            f"--endtime={end:%Y-%m-%dT%H:%M:%S}",
        )
        try:
            jobs = json.loads(text).get("jobs", [])
        except ValueError as bad:
            raise SlurmError(
                "sacct printed no JSON", command="sacct --json", output=text[-2000:]
            ) from bad
        rows = []
        for job in jobs:
            gpus = 0
            for tres in (job.get("tres") or {}).get("allocated", []):
                name = tres.get("type", "") + ("/" + tres["name"] if tres.get("name") else "")
                if name == self.tres:
                    gpus = int(tres.get("count") or 0)
            if not gpus:
                continue
            t = job.get("time") or {}
            rows.append(
                {
                    "job_id": job.get("job_id"),
                    "account": job.get("account"),
                    "gpus": gpus,
                    "start": int(t.get("start") or 0),
                    "end": int(t.get("end") or 0),
                }
            )
        return rows

    # --- writing (each idempotent: callers compare first) ----------------------------------

    def account_add(self, name: str, *, parent: str, description: str) -> None:
        self.sacctmgr(
            "add",
            "account",
            name,
            f"cluster={self.cluster}",
            f"parent={parent}",
            f"description={description[:100]}",
            f"organization={parent}",
        )

    def account_set_parent(self, name: str, parent: str) -> None:
        self.sacctmgr(
            "modify",
            "account",
            "where",
            f"name={name}",
            f"cluster={self.cluster}",
            "set",
            f"parent={parent}",
        )

    def user_add(self, user: str, account: str) -> None:
        self.sacctmgr("add", "user", user, f"account={account}", f"cluster={self.cluster}")

    def limit_set(self, account: str, gpus: int | None) -> None:
        value = -1 if gpus is None else gpus  # -1 clears the limit
        self.sacctmgr(
            "modify",
            "account",
            "where",
            f"name={account}",
            f"cluster={self.cluster}",
            "set",
            f"GrpTRES={self.tres}={value}",
        )

    def requeue(self, job_id: int) -> None:
        self.run("scontrol", "requeue", str(job_id))
