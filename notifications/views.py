from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from common.listing import CappedPaginator

from .models import Notification
from .services import notifications_mark_read

ID_MAX = 2**63 - 1


@login_required
def notification_list(request):
    unread_only = request.GET.get("unread") == "1"
    notes = Notification.objects.filter(recipient=request.user)
    if unread_only:
        notes = notes.filter(read_at__isnull=True)
    # Page numbers, the total counted up to 1,000 (a person's own notices: rarely more).
    page = CappedPaginator(notes, 30).get_page(request.GET.get("page"))
    return render(
        request,
        "notifications/list.html",
        {"page": page, "unread_only": unread_only, "query": "unread=1" if unread_only else ""},
    )


@login_required
@require_POST
def notification_mark_read(request):
    """Without `id`: mark all of mine read. With `id`: that one, if it is mine (someone else's
    id changes nothing and says so no differently: its existence is not revealed)."""
    raw_id = request.POST.get("id")
    if raw_id is None:
        ids = None
    elif raw_id.isdigit() and 0 < int(raw_id) <= ID_MAX:
        ids = [int(raw_id)]
    else:
        messages.error(request, "That is not a notification.")
        return redirect("notifications:list")
    count = notifications_mark_read(user=request.user, ids=ids)
    messages.success(request, f"Marked {count} notification{'s' if count != 1 else ''} read.")
    return redirect("notifications:list")
