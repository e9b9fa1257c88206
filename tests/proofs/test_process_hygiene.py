"""A test run that is killed outright leaves no worker behind: the workers (and their pool
children) that tests start die with the process that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import alive, children_of
from tests.support.proofs import wait_for

pytestmark = [pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_when_the_test_process_is_killed(tmp_path):
    # given a stand-in for pytest that starts a real celery worker the way the tests do
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.support.processes import die_with_parent
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "prefork",
             "-c", "2", "-n", "orphan-check@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "WARNING"],
            cwd={str(ROOT)!r}, start_new_session=True, preexec_fn=die_with_parent(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        open({str(pid_file)!r}, "w").write(str(proc.pid))
        time.sleep(600)
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    stand_in = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        assert wait_for(pid_file.exists, 30)
        worker = int(pid_file.read_text())
        # the worker is up once its prefork pool children exist
        assert wait_for(lambda: len(children_of(worker)) >= 2, 60), "worker did not boot"
        pool = children_of(worker)
        # when the stand-in is killed with no chance to clean up
        stand_in.send_signal(signal.SIGKILL)
        stand_in.wait(10)
        # then the worker and its pool children go too
        assert wait_for(lambda: not alive(worker), 15), "the worker outlived its parent"
        assert wait_for(lambda: not any(alive(p) for p in pool), 15), "pool children survived"
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
