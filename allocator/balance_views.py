"""The balance page (PRODUCT.md section 5): executives see each division's share of each pool
against what it holds, and change a share. Everyone else gets 404, for the page and the POST."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from org.roles import roles_of

from .models import Pool
from .shares import MAX_SHARE_INPUT, ShareRow, balance, division_share_set, share_whatif

ID_MAX = 2**63 - 1


class ShareForm(forms.Form):
    division = forms.IntegerField(min_value=1, max_value=ID_MAX, widget=forms.HiddenInput)
    pool = forms.IntegerField(min_value=1, max_value=ID_MAX, widget=forms.HiddenInput)
    gpus = forms.IntegerField(
        min_value=0,
        max_value=MAX_SHARE_INPUT,
        error_messages={
            "invalid": "Enter a whole number of GPUs.",
            "min_value": "A share cannot be negative.",
            "max_value": "That is more GPUs than any pool holds.",
        },
    )


def _row_of(form: ShareForm | None) -> tuple[int, int] | None:
    """The (division, pool) row of the page a refused form belongs to, so its errors show next
    to its input; None when the ids themselves are bad (then the errors show at the top)."""
    if form is None or not form.errors or form.errors.get("division") or form.errors.get("pool"):
        return None
    if form.non_field_errors():
        return None
    return (form.cleaned_data["division"], form.cleaned_data["pool"])


@login_required
@require_http_methods(["GET", "POST"])
def balance_page(request):
    if not roles_of(request.user).is_executive:
        raise Http404
    form = None
    if request.method == "POST":
        form = ShareForm(request.POST)
        if form.is_valid():
            try:
                result = division_share_set(
                    actor=request.user,
                    division_id=form.cleaned_data["division"],
                    pool_id=form.cleaned_data["pool"],
                    gpus=form.cleaned_data["gpus"],
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
            else:
                share = result.share
                if result.changed:
                    messages.success(
                        request,
                        f"Share of {share.division.name} in {share.pool.name} set to "
                        f"{result.after} GPUs (was {result.before}).",
                    )
                else:
                    messages.info(request, "The share was already that; nothing changed.")
                for warning in result.warnings:
                    messages.warning(request, warning)
                return redirect("allocator:balance")
    pools = balance()
    whatif, whatif_errors, whatif_pool = _whatif(request, pools)
    bad_row = _row_of(form)
    if bad_row is not None and not any(
        (r.division.pk, r.pool.pk) == bad_row for pb in pools for r in pb.rows
    ):
        bad_row = None
    return render(
        request,
        "allocator/balance.html",
        {
            "pools": pools,
            "form": form,
            "bad_division": bad_row[0] if bad_row else None,
            "bad_pool": bad_row[1] if bad_row else None,
            "top_errors": form is not None and bool(form.errors) and bad_row is None,
            "whatif": whatif,
            "whatif_errors": whatif_errors,
            "whatif_pool": whatif_pool,
            "whatif_inputs": _whatif_inputs(request, pools, whatif_pool, whatif_errors),
        },
        status=400 if form is not None and form.errors else 200,
    )


def _whatif(request, pools):
    """The what-if GET form (nothing is saved): `whatif=<pool id>` and `share-<division id>=<GPUs>`
    for the candidate shares. Returns (result or None, errors {division id: message}, pool id)."""
    raw = request.GET.get("whatif")
    if not raw or request.method != "GET":
        return None, {}, None
    try:
        pool_id = int(raw)
    except ValueError:
        return None, {}, None
    pool = next((pb.pool for pb in pools if pb.pool.pk == pool_id), None)
    if pool is None:
        pool = Pool.objects.filter(pk=pool_id).first()
    if pool is None:
        return None, {}, None
    candidate, errors = {}, {}
    for key, value in request.GET.items():
        if not key.startswith("share-"):
            continue
        try:
            division_id = int(key.removeprefix("share-"))
        except ValueError:
            continue
        text = value.strip()
        if not text:
            continue
        if not text.isdigit() or len(text) > 12:
            errors[division_id] = "Enter a whole number of GPUs, 0 or more."
        elif int(text) > MAX_SHARE_INPUT:
            errors[division_id] = "That is more GPUs than any pool holds."
        else:
            candidate[division_id] = int(text)
    if errors:
        return None, errors, pool.pk
    return share_whatif(pool=pool, candidate=candidate), {}, pool.pk


def _whatif_inputs(request, pools, pool_id, errors) -> list[dict]:
    """The what-if form's inputs for the pool tried: what was typed, and its error."""
    rows: list[ShareRow] = next((pb.rows for pb in pools if pb.pool.pk == pool_id), [])
    return [
        {
            "division": row.division,
            "value": request.GET.get(f"share-{row.division.pk}", row.share),
            "error": errors.get(row.division.pk),
        }
        for row in rows
    ]
