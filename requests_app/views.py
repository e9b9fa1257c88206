from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render


@login_required
def request_list(request):
    return render(request, "requests_app/list.html", {})


@login_required
def approvals_inbox(request):
    return render(request, "requests_app/inbox.html", {})


def _pending(request, pk=None):  # pages land in the next commit
    raise Http404


request_detail = request_create = request_edit = _pending
request_submit = request_withdraw = request_decide = _pending
