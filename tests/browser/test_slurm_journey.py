"""The Slurm connector end to end, in a real browser, with a real Celery worker and a real Slurm
(tests/support/slurm.py): rlead approves rita's request and the project's account may run
exactly its GPUs; rita releases early and the limit drops; the jobs that ran show as GPU-hours on
the project page; a limit changed by hand is repaired by "Sync now" on the ops console."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from allocator.connectors.models import PoolAccount, PoolConnector
from allocator.connectors.services import pool_connect
from allocator.connectors.usage import usage_collect
from allocator.models import Allocation
from requests_app.workflow import Status
from tests import factories
from tests.support.requests import build_request

pytestmark = [pytest.mark.browser, pytest.mark.slurm, pytest.mark.worker]


def _limit(slurm, account):
    out = slurm.run(
        "sacctmgr",
        "-n",
        "-P",
        "show",
        "assoc",
        "where",
        f"account={account}",
        "format=User,GrpTRES",
    ).stdout
    return next(
        (t for u, _, t in (line.partition("|") for line in out.splitlines()) if not u), None
    )


def _wait(condition, seconds=40, why=""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {seconds} s: {why}")


def test_approved_released_measured_and_repaired_on_a_real_slurm(
    browse, celery_worker_process, slurm, requester, division_lead, ops, research, project
):
    # given east/H100 enforced by the test cluster, and rita's request for 4 GPUs from now
    pool = factories.PoolFactory(cluster="east", gpu_model="H100", capacity=16)
    factories.DivisionShareFactory(division=research, pool=pool, gpus=16)
    pool_connect(
        pool=pool,
        kind="slurm",
        cluster=slurm.cluster_name,
        partition=slurm.partition,
        gres="gpu",
        slurm_conf=str(slurm.conf),
    )
    now = timezone.now()
    req = build_request(
        Status.PENDING_DIVISION,
        requester=requester,
        project=project,
        pool=pool,
        division_decider=division_lead,
        gpus=4,
        start=now - timedelta(minutes=1),
        end=now + timedelta(days=3),
    )

    # when rlead approves it in the browser
    lead = browse(division_lead)
    lead.visit(f"/requests/{req.pk}/", "request to decide")
    lead.page.get_by_role("button", name="Approve").click()
    expect(lead.page.locator("main .pill").first).not_to_have_text("Pending division review")

    # then the worker allocates it and the cluster enforces it: 4 GPUs run, a 5th waits
    _wait(lambda: _limit(slurm, "atlas") == "gres/gpu=4", why=celery_worker_process.log_tail())
    slurm.sacctmgr("add", "user", "root", "account=atlas")
    short = slurm.submit(account="atlas", gpus=2, seconds=4)
    other = slurm.submit(account="atlas", gpus=2, seconds=300)
    beyond = slurm.submit(account="atlas", gpus=1, seconds=300)
    slurm.wait_job_state(other, {"RUNNING"})
    slurm.wait_job_state(short, {"COMPLETED", "GONE"}, timeout=30)
    slurm.wait_job_state(beyond, {"RUNNING"})  # the short job's 2 GPUs came free
    late = slurm.submit(account="atlas", gpus=2, seconds=300)
    slurm.wait_job_waiting(late, "AssocGrpGRES")

    # when rita releases the GPUs early from the project page
    rita = browse(requester)
    allocation = Allocation.objects.get(pool=pool)
    rita.visit(f"/projects/{project.pk}/", "project")
    rita.page.get_by_role(
        "link", name=f"Release {allocation.gpus} GPUs of {allocation.pool.name}"
    ).click()
    # the confirmation page: everything, now (its default)
    expect(rita.page.locator("h1")).to_have_text("Release GPUs")
    rita.page.get_by_role("button", name="Confirm the release").click()
    rita.page.wait_for_load_state()

    # then the limit drops to 0: running jobs go on, nothing new starts
    _wait(lambda: _limit(slurm, "atlas") == "gres/gpu=0", why=celery_worker_process.log_tail())
    assert slurm.job(late)["job_state"] == "PENDING"

    # and the jobs that ran show as GPU-hours used on the project page
    usage_collect(connector_id=PoolConnector.objects.get().pk)
    rita.visit(f"/projects/{project.pk}/", "project with usage")
    row = rita.page.locator("tr", has_text="east/H100").filter(has_text="Released early")
    expect(row).not_to_contain_text("not measured")
    expect(row).to_contain_text(" of ")

    # when someone raises the limit by hand, and ops press "Sync now"
    slurm.cancel_all()
    slurm.sacctmgr("modify", "account", "where", "name=atlas", "set", "GrpTRES=gres/gpu=9")
    desk = browse(ops)
    desk.visit("/ops/connectors/", "connectors")
    desk.page.get_by_role("button", name="Sync now").click()
    expect(desk.page.locator(".messages")).to_contain_text("Sync of east/H100 queued")

    # then the worker repairs it, and the console says what it found and did
    _wait(lambda: _limit(slurm, "atlas") == "gres/gpu=0", why=celery_worker_process.log_tail())
    desk.visit("/ops/connectors/", "connectors after sync")
    main = desk.page.inner_text("main")
    assert "Drift repaired" in main
    assert "atlas: GrpTRES gres/gpu=9, the ledger says 0" in main
    assert "GrpTRES=gres/gpu=0 on atlas (was 9)" in main
    assert PoolAccount.objects.get().applied_gpus == 0

    # and it reads at phone width too
    phone = browse(ops, viewport={"width": 375, "height": 740}, label="ops-phone")
    phone.visit("/ops/connectors/", "connectors at phone width")
    expect(phone.page.get_by_role("button", name="Sync now")).to_be_visible()
    for b in (lead, rita, desk, phone):
        assert b.errors() == []
