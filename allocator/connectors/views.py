"""The ops console's connector page: each pool's scheduler status, drift found and repaired,
errors with their command and output, what is not enforced yet, and "Sync now"."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from allocator.policies import can_manage_pools

from . import selectors
from .models import PoolConnector


def _require_ops(request):
    # Like the rest of the ops console: others are not told it exists.
    if not can_manage_pools(request.user):
        raise Http404


@login_required
def connectors_page(request):
    _require_ops(request)
    return render(
        request,
        "connectors/ops_connectors.html",
        {"connectors": selectors.connectors_overview(), "nav_section": "ops"},
    )


@login_required
@require_POST
def connector_sync_now(request, pk):
    _require_ops(request)
    connector = get_object_or_404(PoolConnector.objects.select_related("pool"), pk=pk)
    from .services import connector_sync_request

    connector_sync_request(connector=connector, actor=request.user)
    messages.success(
        request,
        f"Sync of {connector.pool} queued: the result shows here within a few seconds.",
    )
    return redirect("connectors:ops")
