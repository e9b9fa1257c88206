"""The balance page (PRODUCT.md section 5): executives see each division's share of each pool
against what it holds, and change shares — one form per pool, a cluster at a time when the lab
has many pools. Everyone else gets 404, for the page and the POST."""

from dataclasses import dataclass, field
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from org.roles import roles_of

from .models import DivisionShare, Pool
from .shares import (
    MAX_SHARE_INPUT,
    PoolBalance,
    ShareRow,
    balance,
    division_share_set,
    share_whatif,
)

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


# Up to this many pools show together; with more, the page shows one cluster at a time (the
# first by default) so it renders what fits on a screen, not every pool of the lab.
PAGE_POOLS = 12
ALL = "all"


@dataclass
class RowView:
    row: ShareRow
    value: object  # what the input shows: the share, or what was typed in a refused save
    errors: list[str]


@dataclass
class PoolView:
    balance: PoolBalance
    rows: list[RowView]


def _entries(post) -> tuple[str, list[tuple[str, str]]]:
    """(pool, [(division, GPUs)]) of a save: the pool's form sends `gpus-<division id>` for each
    division; a single share (`division`, `gpus`) is taken too."""
    pool = post.get("pool", "")
    if "division" in post or "gpus" in post:
        return pool, [(post.get("division", ""), post.get("gpus", ""))]
    return pool, [(k.removeprefix("gpus-"), v) for k, v in post.items() if k.startswith("gpus-")]


@dataclass
class Saved:
    """What a save did: the pool's cluster when it saved, else why not (errors by (pool,
    division), what was typed there, errors for the top of the page, the first refused form)."""

    cluster: str | None = None
    row_errors: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    typed: dict[tuple[int, int], object] = field(default_factory=dict)
    top: list[str] = field(default_factory=list)
    form: ShareForm | None = None

    @property
    def refused(self) -> bool:
        return bool(self.row_errors or self.top)


def _save(request) -> Saved:
    """Sets the shares posted for one pool, all or none (one transaction)."""
    pool_raw, entries = _entries(request.POST)
    forms = [ShareForm({"division": d, "pool": pool_raw, "gpus": g}) for d, g in entries]
    if not forms:
        return Saved(top=["Nothing to save: enter a share."])
    out = Saved()
    row_errors, typed, top = out.row_errors, out.typed, out.top
    for form in forms:
        if form.is_valid():
            continue
        out.form = out.form or form
        if form.errors.get("division") or form.errors.get("pool"):
            top.extend(
                f"{name}: {e}" for name in ("division", "pool") for e in form.errors.get(name, [])
            )
        else:
            key = (form.cleaned_data["pool"], form.cleaned_data["division"])
            row_errors[key] = [str(e) for e in form.errors.get("gpus") or []]
            typed[key] = form.data.get("gpus", "")
    if out.refused:
        return out
    current = {
        (p, d): g
        for d, p, g in DivisionShare.objects.filter(
            pool_id=forms[0].cleaned_data["pool"]
        ).values_list("division_id", "pool_id", "gpus")
    }
    wanted = [
        f.cleaned_data
        for f in forms
        if len(forms) == 1
        or current.get((f.cleaned_data["pool"], f.cleaned_data["division"]), 0)
        != f.cleaned_data["gpus"]
    ]
    if not wanted:
        messages.info(request, "The shares were already those; nothing changed.")
        return Saved(cluster=_cluster_of(forms[0].cleaned_data["pool"]))
    results = []
    try:
        with transaction.atomic():
            for data in wanted:
                try:
                    results.append(
                        division_share_set(
                            actor=request.user,
                            division_id=data["division"],
                            pool_id=data["pool"],
                            gpus=data["gpus"],
                        )
                    )
                except ValidationError as exc:
                    key = (data["pool"], data["division"])
                    refused = next(f for f in forms if f.cleaned_data is data)
                    for name, errors in exc.message_dict.items():
                        if name == "gpus":
                            row_errors.setdefault(key, []).extend(errors)
                            typed[key] = data["gpus"]
                        else:
                            top.extend(errors)
                        for error in errors:
                            refused.add_error(name if name in refused.fields else None, error)
                    out.form = refused
                    raise
    except ValidationError:
        return out
    warnings: list[str] = []
    for result in results:
        share = result.share
        if result.changed:
            messages.success(
                request,
                f"Share of {share.division.name} in {share.pool.name} set to "
                f"{result.after} GPUs (was {result.before}).",
            )
        else:
            messages.info(request, "The share was already that; nothing changed.")
        warnings.extend(w for w in result.warnings if w not in warnings)
    for warning in warnings:
        messages.warning(request, warning)
    return Saved(cluster=results[0].share.pool.cluster)


def _cluster_of(pool_id: int) -> str | None:
    return Pool.objects.filter(pk=pool_id).values_list("cluster", flat=True).first()


def _chosen_cluster(raw: str | None, clusters: list[str], pool_count: int) -> str | None:
    """The cluster shown (None: all)."""
    if raw == ALL:
        return None
    if raw in clusters:
        return raw
    return None if pool_count <= PAGE_POOLS or not clusters else clusters[0]


@login_required
@require_http_methods(["GET", "POST"])
def balance_page(request):
    if not roles_of(request.user).is_executive:
        raise Http404
    saved = _save(request) if request.method == "POST" else Saved()
    if request.method == "POST" and not saved.refused:
        url = reverse("allocator:balance")
        return redirect(f"{url}?{urlencode({'cluster': saved.cluster})}" if saved.cluster else url)
    row_errors, typed, top = saved.row_errors, saved.typed, saved.top
    every_pool = list(Pool.objects.all())
    clusters = sorted({p.cluster for p in every_pool})
    pool_count = len(every_pool)
    cluster_of = {p.pk: p.cluster for p in every_pool}
    raw = request.GET.get("cluster")
    whatif_pool_id = _whatif_pool_id(request)
    if request.method == "POST":
        bad = next(iter(row_errors), None)
        raw = (cluster_of.get(bad[0]) if bad else None) or raw
    elif whatif_pool_id is not None:
        raw = cluster_of.get(whatif_pool_id) or raw
    cluster = _chosen_cluster(raw, clusters, pool_count)
    pools = [p for p in every_pool if cluster is None or p.cluster == cluster]
    balances = balance(pools=pools)
    # A refused row that is not on the page (ids of another pool): its errors go to the top.
    shown = {(r.pool.pk, r.division.pk) for pb in balances for r in pb.rows}
    for key, errors in row_errors.items():
        if key not in shown:
            top.extend(errors)
    whatif, whatif_errors, whatif_pool = _whatif(request, balances)
    views = [
        PoolView(
            balance=pb,
            rows=[
                RowView(
                    row=r,
                    value=typed.get((r.pool.pk, r.division.pk), r.share),
                    errors=row_errors.get((r.pool.pk, r.division.pk), []),
                )
                for r in pb.rows
            ],
        )
        for pb in balances
    ]
    return render(
        request,
        "allocator/balance.html",
        {
            "pools": views,
            "form": saved.form,
            "clusters": clusters,
            "cluster": cluster,
            "pool_count": pool_count,
            "top_errors": top,
            "refused": bool(top or row_errors),
            "whatif": whatif,
            "whatif_errors": whatif_errors,
            "whatif_pool": whatif_pool,
            "whatif_inputs": _whatif_inputs(request, balances, whatif_pool, whatif_errors),
        },
        status=400 if request.method == "POST" else 200,
    )


def _whatif_pool_id(request) -> int | None:
    raw = request.GET.get("whatif") if request.method == "GET" else None
    if raw and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


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
