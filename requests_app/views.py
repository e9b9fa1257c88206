from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def request_list(request):
    return render(request, "requests_app/list.html", {})


@login_required
def approvals_inbox(request):
    return render(request, "requests_app/inbox.html", {})
