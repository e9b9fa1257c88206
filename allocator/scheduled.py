"""Scheduled reclaims and transfers, in words, for the ops console, the pool and project pages
(PRODUCT.md section 4): they are listed until they take effect, so nobody is surprised."""

from . import services
from .models import Reclaim
from .signals import request_ids_for_changes


def _scheduled_reclaims(user=None, **filters):
    """Scheduled reclaims in words; with `user`, only those of projects the user may see
    (org.visibility)."""
    from org.visibility import can_see_project, visible_projects_q

    rows = Reclaim.objects.filter(status=Reclaim.Status.SCHEDULED, **filters)
    if user is not None:
        rows = rows.filter(visible_projects_q(user, "allocation__project__"))
    rows = list(
        rows.select_related(
            "allocation__pool", "allocation__project__team", "transfer_to__project__team"
        ).order_by("effective_at", "id")[:200]
    )
    requests = request_ids_for_changes([r.transfer_to_id for r in rows if r.transfer_to_id])
    for r in rows:
        visible = user is None or (
            r.transfer_to_id is None or can_see_project(user, r.transfer_to.project)
        )
        r.request_id = requests.get(r.transfer_to_id) if visible else None
        r.effect = services.reclaim_effect_words(
            r, r.allocation, request_id=r.request_id, name_target=visible
        )
    return rows


def scheduled_reclaims_for_pool(pool_id: int, *, user):
    return _scheduled_reclaims(user, allocation__pool_id=pool_id)


def scheduled_reclaims_for_project(project_id: int, *, user):
    return _scheduled_reclaims(user, allocation__project_id=project_id)


def scheduled_reclaims():
    return _scheduled_reclaims()
