from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def project_list(request):
    return render(request, "org/project_list.html", {})


@login_required
def project_detail(request, pk):
    return render(request, "org/project_list.html", {})
