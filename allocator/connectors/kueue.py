"""The Kueue export (PRODUCT.md section 9): the ResourceFlavors, ClusterQueues and LocalQueues
a GitOps tool applies to a Kubernetes cluster, rendered from the same desired state as the
Slurm limits — the GPUs each project holds now (services.desired_gpus).

- one ResourceFlavor per pool (`east-h100`), selecting nodes labelled `allotment.io/pool`;
- one ClusterQueue per project holding GPUs, in the cohort of its division, with a nominal
  quota of `nvidia.com/gpu` per pool (flavour) equal to what it holds there — 0 while an
  allocation of its there has not reached its end yet (it starts later, or was released or
  reclaimed to nothing before its end), so a GitOps tool keeps the queues rather than deleting
  them and recreating them when the GPUs arrive;
- one LocalQueue per project, in the namespace named after the project, pointing at it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime

import yaml
from django.db.models import Q, Sum
from django.utils import timezone

from allocator.models import Allocation, Pool
from allocator.selectors import HOLDING_STATES, holding_allocations
from org.models import Project

API_VERSION = "kueue.x-k8s.io/v1beta1"
GPU = "nvidia.com/gpu"
POOL_LABEL = "allotment.io/pool"


def dns_label(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label): lower-case alphanumerics and '-', <= 63."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "x"


def kueue_objects(*, at: datetime | None = None) -> list[dict]:
    at = at or timezone.now()
    pools = list(Pool.objects.order_by("cluster", "gpu_model"))
    held = (
        holding_allocations()
        .filter(start__lte=at, end__gt=at)
        .values("project_id", "pool_id")
        .annotate(total=Sum("gpus"))
        .order_by()
    )
    quota: dict[int, dict[int, int]] = defaultdict(dict)
    # Given back early, the allocation's own end is cut at the release: the end it was granted
    # (or extended) to is on its ledger.
    given_back = [Allocation.State.RELEASED, Allocation.State.RECLAIMED]
    for project_id, pool_id in (
        Allocation.objects.filter(
            Q(state__in=[*HOLDING_STATES, *given_back], end__gt=at)
            | Q(state__in=given_back, ledger__end__gt=at)
        )
        .values_list("project_id", "pool_id")
        .distinct()
        .order_by()
    ):
        quota[project_id][pool_id] = 0
    for row in held:
        quota[row["project_id"]][row["pool_id"]] = row["total"]
    projects = (
        Project.objects.filter(pk__in=quota).select_related("team__division").order_by("name")
    )
    flavour = {p.pk: dns_label(p.name) for p in pools}
    docs: list[dict] = [
        {
            "apiVersion": API_VERSION,
            "kind": "ResourceFlavor",
            "metadata": {
                "name": flavour[p.pk],
                "labels": {"app.kubernetes.io/managed-by": "allotment"},
            },
            "spec": {"nodeLabels": {POOL_LABEL: flavour[p.pk]}},
        }
        for p in pools
    ]
    for project in projects:
        name = dns_label(project.name)
        division = project.team.division
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "ClusterQueue",
                "metadata": {
                    "name": name,
                    "labels": {
                        "app.kubernetes.io/managed-by": "allotment",
                        "allotment.io/division": dns_label(division.slug),
                        "allotment.io/team": dns_label(project.team.slug),
                    },
                },
                "spec": {
                    "cohort": dns_label(division.slug),
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}},
                    "resourceGroups": [
                        {
                            "coveredResources": [GPU],
                            "flavors": [
                                {
                                    "name": flavour[pool.pk],
                                    "resources": [
                                        {"name": GPU, "nominalQuota": quota[project.pk][pool.pk]}
                                    ],
                                }
                                for pool in pools
                                if pool.pk in quota[project.pk]
                            ],
                        }
                    ],
                },
            }
        )
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "LocalQueue",
                "metadata": {"name": name, "namespace": name},
                "spec": {"clusterQueue": name},
            }
        )
    return docs


def kueue_yaml(*, at: datetime | None = None) -> str:
    at = at or timezone.now()
    header = f"# Kueue objects rendered by Allotment from the ledger as of {at.isoformat()}\n"
    return header + yaml.safe_dump_all(kueue_objects(at=at), sort_keys=False, explicit_start=True)
