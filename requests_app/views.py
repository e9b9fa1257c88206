"""Request pages: list, detail, file/edit, and the approvals inbox. Thin: parse, call one service,
render. What a user may not see is a 404; what they see but may not do is a 403 with the reason;
a move the request's state no longer allows (somebody decided first) returns to the page with a
message."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseForbidden
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from . import policies, previews, selectors, services, sla, validation
from .forecasts import forecasts_for
from .forms import DecisionForm, RequestForm, WithdrawForm
from .workflow import Status

PAGE_SIZE = 25


def _forbidden(request, reason: str):
    request.security_reason = reason  # for the security log (common/security.py)
    html = render_to_string("requests_app/forbidden.html", {"reason": reason}, request=request)
    return HttpResponseForbidden(html)


def _page(request, queryset):
    page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()


@login_required
def request_list(request):
    filterset = selectors.RequestFilter(
        request.GET or None, queryset=selectors.requests_visible_to(request.user), request=request
    )
    queryset = filterset.qs if filterset.is_bound else filterset.queryset
    page, query = _page(request, queryset.order_by("-created_at", "-id"))
    forecasts = forecasts_for(page.object_list)
    for r in page.object_list:
        r.forecast = forecasts.get(r.pk)
    return render(
        request,
        "requests_app/list.html",
        {
            "filter": filterset,
            "page": page,
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


@login_required
def approvals_inbox(request):
    page, query = _page(request, selectors.inbox_for(request.user))
    rows = list(page.object_list)
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
    return render(
        request, "requests_app/inbox.html", {"page": page, "query": query, "items": items}
    )
