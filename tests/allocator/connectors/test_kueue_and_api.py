"""The Kueue export's content, and who may read it and the connector API (no cluster needed:
these read and write only the database)."""

import pytest
import yaml
from rest_framework.test import APIClient

from allocator.connectors.models import PoolConnector
from audit.models import AuditEvent
from tests import factories
from tests.factories import in_days

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def held(pool, project, other_team):
    west = factories.PoolFactory(cluster="west", gpu_model="H200", capacity=32)
    factories.AllocationFactory(pool=pool, project=project, gpus=8)
    factories.AllocationFactory(pool=pool, project=project, gpus=4)
    factories.AllocationFactory(pool=west, project=project, gpus=2)
    other = factories.ProjectFactory(team=other_team, name="Helper Bot")
    factories.AllocationFactory(pool=west, project=other, gpus=16)
    # not held now: ended, and not started yet
    factories.AllocationFactory(
        pool=pool, project=other, gpus=5, start=in_days(-9), end=in_days(-2)
    )
    factories.AllocationFactory(pool=pool, project=other, gpus=7, start=in_days(3), end=in_days(9))
    return west


def test_kueue_export_renders_the_quotas_held_now(api, ops, held):
    api.force_authenticate(ops)
    response = api.get("/api/v1/export/kueue.yaml")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    docs = [d for d in yaml.safe_load_all(response.content) if d]
    by_kind = {}
    for doc in docs:
        assert doc["apiVersion"] == "kueue.x-k8s.io/v1beta1"
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    assert set(by_kind["ResourceFlavor"]) == {"east-h100", "west-h200"}
    assert by_kind["ResourceFlavor"]["east-h100"]["spec"]["nodeLabels"] == {
        "allotment.io/pool": "east-h100"
    }
    atlas = by_kind["ClusterQueue"]["atlas"]["spec"]
    assert atlas["cohort"] == "research"
    flavors = {f["name"]: f["resources"][0] for f in atlas["resourceGroups"][0]["flavors"]}
    assert flavors == {
        "east-h100": {"name": "nvidia.com/gpu", "nominalQuota": 12},
        "west-h200": {"name": "nvidia.com/gpu", "nominalQuota": 2},
    }
    helper = by_kind["ClusterQueue"]["helper-bot"]["spec"]
    assert helper["cohort"] == "applications"
    # its east allocation starts in 3 days: the flavour is there at 0 until then
    assert {
        f["name"]: f["resources"][0]["nominalQuota"] for f in helper["resourceGroups"][0]["flavors"]
    } == {"east-h100": 0, "west-h200": 16}
    assert by_kind["LocalQueue"]["helper-bot"] == {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "LocalQueue",
        "metadata": {"name": "helper-bot", "namespace": "helper-bot"},
        "spec": {"clusterQueue": "helper-bot"},
    }


def _queues(api, ops):
    api.force_authenticate(ops)
    docs = [d for d in yaml.safe_load_all(api.get("/api/v1/export/kueue.yaml").content) if d]
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for doc in docs
        if doc["kind"] in ("ClusterQueue", "LocalQueue")
    }


def _quotas(cluster_queue):
    return {
        f["name"]: f["resources"][0]["nominalQuota"]
        for f in cluster_queue["spec"]["resourceGroups"][0]["flavors"]
    }


def test_kueue_keeps_queues_at_zero_until_the_allocation_ends(api, ops, requester, make_change):
    # given Atlas's only allocation, granted by the engine, which starts in 2 days
    from allocator import services
    from allocator.models import Allocation

    change = make_change(gpus=8, start=in_days(2), end=in_days(12))
    services.allocation_change_apply(change_id=change.pk)
    allocation = Allocation.objects.get(change=change)
    # then its queues are exported already, with a nominal quota of 0
    queues = _queues(api, ops)
    assert _quotas(queues[("ClusterQueue", "atlas")]) == {"east-h100": 0}
    assert queues[("LocalQueue", "atlas")]["spec"] == {"clusterQueue": "atlas"}
    # and when it holds its GPUs, the quota is its 8
    later = in_days(3)
    from allocator.connectors.kueue import kueue_objects

    [cq] = [d for d in kueue_objects(at=later) if d["kind"] == "ClusterQueue"]
    assert _quotas(cq) == {"east-h100": 8}
    # when the team gives it back before it has started
    services.allocation_release(allocation_id=allocation.pk, actor=requester)
    # then the queues stay, at 0, until the end it was granted to
    assert _quotas(_queues(api, ops)[("ClusterQueue", "atlas")]) == {"east-h100": 0}
    # and after that end they are gone
    assert [d for d in kueue_objects(at=in_days(13)) if d["kind"] != "ResourceFlavor"] == []


def test_kueue_keeps_queues_of_an_allocation_released_midway(api, ops, requester, make_change):
    # given Atlas's allocation that started an hour ago, released now (its end is cut here)
    from allocator import services
    from allocator.models import Allocation

    change = make_change(gpus=8, start=in_days(-1 / 24), end=in_days(10))
    services.allocation_change_apply(change_id=change.pk)
    allocation = Allocation.objects.get(change=change)
    services.allocation_release(allocation_id=allocation.pk, actor=requester)
    allocation.refresh_from_db()
    assert allocation.end < in_days(1)
    # then its ClusterQueue and LocalQueue remain, at 0, until the granted end
    queues = _queues(api, ops)
    assert _quotas(queues[("ClusterQueue", "atlas")]) == {"east-h100": 0}
    assert ("LocalQueue", "atlas") in queues


def test_kueue_export_is_for_ops_and_executives(api, executive, requester, division_lead, held):
    api.force_authenticate(executive)
    assert api.get("/api/v1/export/kueue.yaml").status_code == 200
    for user in (requester, division_lead):
        api.force_authenticate(user)
        response = api.get("/api/v1/export/kueue.yaml")
        assert response.status_code == 403
        assert "compute ops and executives" in response.json()["detail"]
    api.force_authenticate(None)
    assert api.get("/api/v1/export/kueue.yaml").status_code in (401, 403)


@pytest.fixture
def connector(pool):
    return PoolConnector.objects.create(
        pool=pool, kind="slurm", cluster="east", partition="gpu", gres="gpu:h100"
    )


def test_pool_representation_carries_its_connector(api, requester, pool, connector):
    api.force_authenticate(requester)
    body = api.get(f"/api/v1/pools/{pool.pk}/").json()
    assert body["connector"] == {
        "kind": "slurm",
        "cluster": "east",
        "partition": "gpu",
        "gres": "gpu:h100",
        "last_sync": None,
        "status": "never_synced",
        "drift": [],
    }


def test_connector_api_and_sync_now_are_for_compute_ops(api, ops, requester, executive, connector):
    for user in (requester, executive):
        api.force_authenticate(user)
        assert api.get("/api/v1/connectors/").status_code == 403
        assert api.post(f"/api/v1/connectors/{connector.pk}/sync/").status_code == 403
    assert not AuditEvent.objects.filter(action="connector.sync_requested").exists()
    api.force_authenticate(ops)
    assert api.get("/api/v1/connectors/").json()["results"][0]["gres"] == "gpu:h100"
    assert api.post(f"/api/v1/connectors/{connector.pk}/sync/").status_code == 202
    assert api.post("/api/v1/connectors/999999/sync/").status_code == 404
    assert AuditEvent.objects.filter(action="connector.sync_requested").count() == 1


def test_ops_connector_page_is_hidden_from_others(client, requester, ops, connector):
    client.force_login(requester)
    assert client.get("/ops/connectors/").status_code == 404
    assert client.post(f"/ops/connectors/{connector.pk}/sync/").status_code == 404
    client.force_login(ops)
    page = client.get("/ops/connectors/")
    assert page.status_code == 200
    assert "east/H100 → Slurm east / gpu" in page.content.decode()
    assert "Never synced" in page.content.decode()


def test_pool_connect_refuses_unknown_pools_and_bad_names(pool):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="No pool named 'nowhere/X'"):
        call_command(
            "pool_connect",
            "nowhere/X",
            "slurm",
            "--cluster",
            "c",
            "--partition",
            "p",
            "--gres",
            "gpu",
            "--no-sync",
        )
    with pytest.raises(CommandError, match="cluster 'a,b' is not a Slurm name"):
        call_command(
            "pool_connect",
            "east/H100",
            "slurm",
            "--cluster",
            "a,b",
            "--partition",
            "p",
            "--gres",
            "gpu",
            "--no-sync",
        )
    with pytest.raises(CommandError, match="east/H100 has no connector"):
        call_command("pool_sync", "east/H100")
    assert not PoolConnector.objects.exists()
