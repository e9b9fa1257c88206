from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render

from org.roles import roles_of

from .models import Pool
from .selectors import pools_status


@login_required
def pool_list(request):
    return render(request, "allocator/pool_list.html", {"pools": pools_status()})


@login_required
def pool_detail(request, pk):
    pool = get_object_or_404(Pool, pk=pk)
    return render(
        request, "allocator/pool_detail.html", {"pool": pool, "status": pools_status([pool])[0]}
    )


@login_required
def ops_console(request):
    if not roles_of(request.user).is_compute_ops:
        raise Http404
    return render(request, "allocator/ops.html", {})


@login_required
def balance(request):
    if not roles_of(request.user).is_executive:
        raise Http404
    return render(request, "allocator/balance.html", {})
