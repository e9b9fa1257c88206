from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from .models import Notification
from .services import notifications_mark_read


@login_required
def notification_list(request):
    page = Paginator(Notification.objects.filter(recipient=request.user), 30).get_page(
        request.GET.get("page")
    )
    return render(request, "notifications/list.html", {"page": page})


@login_required
@require_POST
def notification_mark_read(request):
    raw_id = request.POST.get("id")
    ids = [int(raw_id)] if raw_id and raw_id.isdigit() and len(raw_id) < 18 else None
    count = notifications_mark_read(user=request.user, ids=ids)
    messages.success(request, f"Marked {count} notification{'s' if count != 1 else ''} read.")
    return redirect("notifications:list")
