"""Request pages: list, detail, file/edit, and the approvals inbox. Thin: parse, call one service,
render. What a user may not see is a 404; what they see but may not do is a 403 with the reason;
a move the request's state no longer allows (somebody decided first) returns to the page with a
message."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseForbidden, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from common.listing import CappedPaginator, capped_count_label, keyset_page

from . import policies, previews, selectors, services, sla, validation
from .forecasts import forecasts_for
from .forms import (
    BulkDecisionForm,
    DecisionForm,
    InboxQueryForm,
    RequestForm,
    WithdrawForm,
)
from .workflow import Status

PAGE_SIZE = 25


def _forbidden(request, reason: str):
    request.security_reason = reason  # for the security log (common/security.py)
    html = render_to_string("requests_app/forbidden.html", {"reason": reason}, request=request)
    return HttpResponseForbidden(html)


# The requests list: newest first on the index request_recent, "newer / older" from a cursor
# (no COUNT(*) of ~100,000 rows; docs/performance.md, "HTML lists").
LIST_ORDER = ("-created_at", "-id")


@login_required
def request_list(request):
    get = request.GET.copy()
    # Navigation, not a filter: kept out of the filters and of the export link (an old
    # bookmark's page number included).
    get.pop("cursor", None)
    get.pop("page", None)
    filterset = selectors.RequestFilter(
        get or None, queryset=selectors.requests_visible_to(request.user), request=request
    )
    queryset = filterset.qs if filterset.is_bound else filterset.queryset
    page = keyset_page(
        queryset, ordering=LIST_ORDER, cursor=request.GET.get("cursor"), size=PAGE_SIZE
    )
    query = get.urlencode()
    forecasts = forecasts_for(page.object_list)
    for r in page.object_list:
        r.forecast = forecasts.get(r.pk)
    return render(
        request,
        "requests_app/list.html",
        {
            "filter": filterset,
            "page": page,
            "total": capped_count_label(queryset),
            "query": query,
            "statuses": Status.choices,
            "selected_statuses": request.GET.getlist("status"),
        },
    )


def _detail_context(request, req, *, decision_form=None, withdraw_form=None):
    steps = list(req.steps.all())
    capacity = policies.decide_capacity(request.user, req, steps=steps)
    decide_verdict = capacity.verdict
    impact = (
        previews.approval_impacts([req], user=request.user).get(req.pk) if decide_verdict else None
    )
    return {
        "req": req,
        "steps": steps,
        "events": list(selectors.request_audit_events(req)),
        "queue_position": selectors.queue_positions_for([req]).get(req.pk),
        "can": policies.available_actions(request.user, req, steps=steps),
        "decide_verdict": decide_verdict,
        "deciding_for": capacity.acting.delegator_name if capacity.acting else None,
        "due": sla.due_for(req),
        "impact": impact,
        "stage": policies.current_stage(req),
        "decision_form": decision_form or DecisionForm(),
        "withdraw_form": withdraw_form or WithdrawForm(),
        "allocation_id": req.change.allocation_id
        if req.change_id and req.change.status == "applied"
        else None,
        "forecast": forecasts_for([req]).get(req.pk),
    }


@login_required
def request_detail(request, pk):
    req = selectors.request_get_for_user(request.user, pk)
    return render(request, "requests_app/detail.html", _detail_context(request, req))


def _form_data(form: RequestForm) -> dict:
    return dict(form.cleaned_data)


def _all_errors(request, form: RequestForm) -> None:
    """The form failed to parse some fields: still check the others against the service rules,
    so every mistake shows at once rather than one round trip each."""
    try:
        validation.request_clean(user=request.user, data=_form_data(form))
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            if field in form.fields and field not in form.errors:
                form.add_error(field, errors)


@login_required
@require_http_methods(["GET", "POST"])
def request_create(request):
    form = RequestForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            req = services.request_create(user=request.user, data=_form_data(form))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _after_save(request, req, created=True)
    elif request.method == "POST":
        _all_errors(request, form)
    status = 400 if request.method == "POST" else 200
    return render(request, "requests_app/form.html", {"form": form, "req": None}, status=status)


def _after_save(request, req, *, created: bool):
    if "then_submit" in request.POST:
        try:
            services.request_submit(user=request.user, request_id=req.pk)
        except (ValidationError, services.RequestError) as exc:
            messages.error(request, _first_message(exc))
        else:
            messages.success(request, f"Request #{req.pk} submitted for division review.")
            return redirect("requests:detail", pk=req.pk)
    else:
        messages.success(
            request,
            f"Draft #{req.pk} saved. Submit it when it is ready."
            if created
            else f"Request #{req.pk} saved.",
        )
    return redirect("requests:detail", pk=req.pk)


def _first_message(exc) -> str:
    if isinstance(exc, services.RequestError):
        return exc.message
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field.replace('_', ' ')}: {' '.join(msgs)}"
            for field, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)


@login_required
@require_http_methods(["GET", "POST"])
def request_edit(request, pk):
    req = selectors.request_get_for_user(request.user, pk)
    verdict = policies.can_edit(request.user, req)
    if not verdict:
        if verdict.conflict:
            messages.error(request, verdict.reason)
            return redirect("requests:detail", pk=req.pk)
        return _forbidden(request, verdict.reason)
    form = RequestForm(
        request.POST or None, user=request.user, initial=RequestForm.initial_from(req)
    )
    if request.method == "POST" and form.is_valid():
        try:
            req = services.request_update(
                user=request.user, request_id=req.pk, data=_form_data(form)
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        except services.NotAllowed as exc:
            return _forbidden(request, exc.message)
        except services.Conflict as exc:
            messages.error(request, exc.message)
            return redirect("requests:detail", pk=req.pk)
        else:
            return _after_save(request, req, created=False)
    elif request.method == "POST":
        _all_errors(request, form)
    status = 400 if request.method == "POST" else 200
    return render(request, "requests_app/form.html", {"form": form, "req": req}, status=status)


def _act(request, pk, run, *, success: str, form=None, form_key=None):
    """Run one service on a request the user can see; answer as the module docstring says."""
    req = selectors.request_get_for_user(request.user, pk)  # 404 first
    try:
        run(req)
    except services.NotAllowed as exc:
        return _forbidden(request, exc.message)
    except services.Conflict as exc:
        messages.error(request, exc.message)
    except ValidationError as exc:
        if form is not None:
            form.add_error(None, exc)
            context = _detail_context(request, req, **{form_key: form})
            return render(request, "requests_app/detail.html", context, status=400)
        messages.error(request, _first_message(exc))
    else:
        messages.success(request, success)
    return redirect("requests:detail", pk=req.pk)


@login_required
@require_POST
def request_submit(request, pk):
    return _act(
        request,
        pk,
        lambda req: services.request_submit(user=request.user, request_id=req.pk),
        success="Submitted for division review.",
    )


@login_required
@require_POST
def request_withdraw(request, pk):
    form = WithdrawForm(request.POST)
    comment = form.cleaned_data["comment"] if form.is_valid() else ""
    return _act(
        request,
        pk,
        lambda req: services.request_withdraw(
            user=request.user, request_id=req.pk, comment=comment
        ),
        success="Request withdrawn.",
    )


@login_required
@require_POST
def request_decide(request, pk):
    form = DecisionForm(request.POST)
    if not form.is_valid():
        req = selectors.request_get_for_user(request.user, pk)
        context = _detail_context(request, req, decision_form=form)
        return render(request, "requests_app/detail.html", context, status=400)
    action = form.cleaned_data["action"]
    labels = {
        "approve": "Approved.",
        "reject": "Rejected.",
        "request_changes": "Sent back for changes.",
    }
    return _act(
        request,
        pk,
        lambda req: services.request_decide(
            user=request.user,
            request_id=req.pk,
            action=action,
            comment=form.cleaned_data["comment"],
        ),
        success=labels[action],
        form=form,
        form_key="decision_form",
    )


def _inbox_rows(request, params: dict):
    """The page of the inbox the query asks for: (page, rows). Sorting by due time orders the
    ids in Python (selectors.inbox_by_due) and loads only this page's rows."""
    sort = params.pop("sort", None) or "oldest"
    queryset = selectors.inbox_for(request.user, sort=sort, **params)
    # Page numbers with a total counted up to 1,000: six sort orders, some on joined or
    # nullable columns and one made in Python, which a keyset cannot follow.
    if sort != "due":
        page = CappedPaginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
        return page, list(page.object_list)
    ids = CappedPaginator(selectors.inbox_by_due(queryset), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    wanted = list(ids.object_list)
    by_id = {r.pk: r for r in queryset.filter(pk__in=wanted)}
    return ids, [by_id[pk] for pk in wanted if pk in by_id]


@login_required
def approvals_inbox(request):
    query_form = InboxQueryForm(request.GET or None, sorts=selectors.INBOX_SORTS)
    params: dict = {}
    if query_form.is_bound and query_form.is_valid():
        params = {k: v for k, v in query_form.cleaned_data.items() if v not in (None, "")}
    page, rows = _inbox_rows(request, params)
    query = request.GET.copy()
    query.pop("page", None)
    now = timezone.now()
    impacts = previews.approval_impacts(rows, user=request.user, now=now)
    items = [
        {
            "req": r,
            "age": now - r.waiting_since,
            "effect": impacts[r.pk].effect if r.pk in impacts else None,
            "impact": impacts.get(r.pk),
            "due": sla.due_for(r, now=now),
            "on_behalf_of": policies.acting_for_in_list(request.user, r),
        }
        for r in rows
    ]
    context = {
        "page": page,
        "query": query.urlencode(),
        "items": items,
        "query_form": query_form,
        "bulk_form": BulkDecisionForm(),
        "filtered": bool(params),
    }
    status = 400 if query_form.is_bound and not query_form.is_valid() else 200
    return render(request, "requests_app/inbox.html", context, status=status)


BULK_MAX = 100
BULK_ACTIONS = {"approve": "approved", "reject": "rejected"}


def _inbox_back(request):
    """Back to the inbox with the sort and filters the decision was made from."""
    query = QueryDict(request.POST.get("back", "")[:2000]).copy()
    query.pop("page", None)
    url = reverse("requests:inbox")
    return redirect(f"{url}?{query.urlencode()}" if query else url)


@login_required
@require_POST
def approvals_inbox_decide(request):
    """Decide one request (its own Approve/Reject button) or every ticked one, each through
    services.request_decide on its own: one refused item does not stop the others, and each gets
    its own message."""
    form = BulkDecisionForm(request.POST)
    one = request.POST.get("one", "")
    if one:
        action, _, raw = one.partition(":")
        raw_ids = [raw]
    else:
        action = request.POST.get("action", "")
        raw_ids = request.POST.getlist("request")
    if not form.is_valid():
        problems = "; ".join(
            f"{form.fields[field].label}: {' '.join(errors)}"
            for field, errors in form.errors.items()
        )
        messages.error(request, f"Nothing decided: {problems}")
        return _inbox_back(request)
    if action not in BULK_ACTIONS:
        messages.error(request, "Nothing decided: choose Approve or Reject.")
        return _inbox_back(request)
    ids = [int(raw) for raw in raw_ids if raw.isdigit() and len(raw) < 12]
    if len(ids) != len(raw_ids):
        messages.error(
            request, "Nothing decided: the selection holds something that is not a request number."
        )
        return _inbox_back(request)
    ids = list(dict.fromkeys(ids))
    if not ids:
        messages.error(request, "Nothing decided: tick at least one request.")
        return _inbox_back(request)
    if len(ids) > BULK_MAX:
        messages.error(request, f"Nothing decided: at most {BULK_MAX} requests at once.")
        return _inbox_back(request)
    verb = BULK_ACTIONS[action]
    for pk in ids:
        own = request.POST.get(f"comment-{pk}", "").strip()
        comment = own or form.cleaned_data["comment"]
        try:
            req = services.request_decide(
                user=request.user, request_id=pk, action=action, comment=comment
            )
        except Http404:
            messages.error(request, f"#{pk}: not {verb}: no such request.")
        except services.RequestError as exc:
            messages.error(request, f"#{pk}: not {verb}: {exc.message}")
        except ValidationError as exc:
            messages.error(request, f"#{pk}: not {verb}: {_first_message(exc)}")
        else:
            then = (
                " It now goes to executive review."
                if req.status == Status.PENDING_EXECUTIVE
                else ""
            )
            messages.success(request, f"#{pk} ({req.project.name}): {verb}.{then}")
    return _inbox_back(request)
