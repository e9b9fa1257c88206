"""The filing form. It only parses; validation.request_clean decides what is valid, so the page
and the API give the same answers (its errors land on the form's fields)."""

from typing import cast

from django import forms
from django.utils import timezone

from allocator.models import Allocation, Pool
from org.models import Division, Project
from org.roles import roles_of

from .models import JUSTIFICATION_MAX, ComputeRequest

DATETIME_FORMAT = "%Y-%m-%dT%H:%M"


def _datetime_field(label: str, help_text: str = "", required: bool = True):
    return forms.DateTimeField(
        label=label,
        required=required,
        help_text=help_text,
        input_formats=[DATETIME_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_FORMAT),
    )


def _text(label: str, help_text: str):
    return forms.CharField(
        label=label,
        help_text=help_text,
        max_length=JUSTIFICATION_MAX,
        widget=forms.Textarea(attrs={"rows": 4, "maxlength": JUSTIFICATION_MAX}),
    )


class RequestForm(forms.Form):
    project = forms.TypedChoiceField(label="Project", coerce=int)
    pool = forms.TypedChoiceField(label="Pool", coerce=int)
    kind = forms.ChoiceField(
        label="Kind",
        choices=ComputeRequest.Kind.choices,
        initial=ComputeRequest.Kind.NEW,
        help_text="An increase adds GPUs to one of the project's allocations; an extension "
        "moves its end (it keeps its GPUs and starts where it ends now).",
    )
    target_allocation = forms.TypedChoiceField(
        label="Allocation to grow",
        coerce=int,
        required=False,
        empty_value=None,
        help_text="For an increase or an extension only.",
    )
    gpus = forms.IntegerField(
        label="GPUs",
        required=False,
        widget=forms.NumberInput(attrs={"min": 1, "inputmode": "numeric"}),
        help_text="Not needed for an extension.",
    )
    start = _datetime_field("Start", "Not needed for an extension.", required=False)
    end = _datetime_field("End")
    priority = forms.ChoiceField(
        label="Priority",
        choices=ComputeRequest.Priority.choices,
        initial=ComputeRequest.Priority.NORMAL,
        help_text="Urgent requests also go to executive review.",
    )
    flexible_start = forms.BooleanField(
        label="A later start is acceptable", required=False, initial=False
    )
    goal = _text("Goal", "What are the GPUs for?")
    expected_outcome = _text("Expected outcome or milestone", "What will you have at the end?")
    size_rationale = _text("Why this size and duration", "How did you arrive at these numbers?")
    impact_if_denied = _text("If it is not granted", "What happens if the request is refused?")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        # datetime-local inputs carry no zone: say which one the form reads them in (the
        # server's current zone, TIME_ZONE); a time that does not exist there (a DST gap) or is
        # ambiguous is refused by Django's DateTimeField, naming the zone.
        zone = timezone.get_current_timezone_name()
        for name in ("start", "end"):
            field = self.fields[name]
            field.label = f"{field.label} ({zone})"
            field.help_text = " ".join(filter(None, [f"Times are in {zone}.", field.help_text]))
        roles = roles_of(user)
        projects = (
            Project.objects.filter(team_id__in=roles.team_ids)
            .exclude(state=Project.State.ENDED)
            .select_related("team")
            .order_by("name")
        )
        self.fields["project"].choices = [("", "Choose a project")] + [
            (p.pk, f"{p.name} ({p.team.name})") for p in projects
        ]
        self.fields["pool"].choices = [("", "Choose a pool")] + [
            (p.pk, p.name) for p in Pool.objects.order_by("cluster", "gpu_model")
        ]
        allocations = (
            Allocation.objects.filter(
                project__team_id__in=roles.team_ids,
                state=Allocation.State.ACTIVE,
                end__gt=timezone.now(),
            )
            .select_related("project", "pool")
            .order_by("project__name", "end")
        )
        self.fields["target_allocation"].choices = [("", "None (a new allocation)")] + [
            (
                a.pk,
                f"#{a.pk} {a.project.name}: {a.gpus} × {a.pool.name} until "
                f"{timezone.localtime(a.end):%Y-%m-%d %H:%M}",
            )
            for a in allocations
        ]

    @classmethod
    def initial_from(cls, req: ComputeRequest) -> dict:
        return {
            "project": req.project_id,
            "pool": req.pool_id,
            "kind": req.kind,
            "target_allocation": req.target_allocation_id,
            "gpus": req.gpus,
            "start": timezone.localtime(req.start),
            "end": timezone.localtime(req.end),
            "priority": req.priority,
            "flexible_start": req.flexible_start,
            "goal": req.goal,
            "expected_outcome": req.expected_outcome,
            "size_rationale": req.size_rationale,
            "impact_if_denied": req.impact_if_denied,
        }


class DecisionForm(forms.Form):
    action = forms.ChoiceField(
        choices=[
            ("approve", "Approve"),
            ("reject", "Reject"),
            ("request_changes", "Request changes"),
        ]
    )
    comment = forms.CharField(
        label="Comment",
        required=False,
        max_length=JUSTIFICATION_MAX,
        help_text="Required to reject or to ask for changes.",
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": JUSTIFICATION_MAX}),
    )


class WithdrawForm(forms.Form):
    comment = forms.CharField(label="Why (optional)", required=False, max_length=500)


class InboxQueryForm(forms.Form):
    """The inbox's sort and filters, read from the query string."""

    sort = forms.ChoiceField(label="Sort by", required=False, choices=[])
    pool = forms.ModelChoiceField(label="Pool", required=False, queryset=Pool.objects.none())
    division = forms.ModelChoiceField(
        label="Division", required=False, queryset=Division.objects.none()
    )
    min_gpus = forms.IntegerField(
        label="At least (GPUs)", required=False, min_value=1, max_value=1_000_000
    )
    max_gpus = forms.IntegerField(
        label="At most (GPUs)", required=False, min_value=1, max_value=1_000_000
    )

    def __init__(self, *args, sorts: dict, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["sort"]).choices = [
            (key, label) for key, (label, _) in sorts.items()
        ]
        pools = Pool.objects.order_by("cluster", "gpu_model")
        cast(forms.ModelChoiceField, self.fields["pool"]).queryset = pools
        divisions = Division.objects.order_by("name")
        cast(forms.ModelChoiceField, self.fields["division"]).queryset = divisions

    def clean(self):
        data = super().clean()
        low, high = data.get("min_gpus"), data.get("max_gpus")
        if low is not None and high is not None and low > high:
            raise forms.ValidationError("“At least” is more than “at most”: no request fits.")
        return data


class BulkDecisionForm(forms.Form):
    """The inbox's comment for all ticked requests (a comment per item overrides it). The
    decision itself (approve or reject) is read by the view, as the per-row buttons send it."""

    comment = forms.CharField(
        label="Comment for all",
        required=False,
        max_length=JUSTIFICATION_MAX,
        help_text="Used where an item has no comment of its own. Required to reject.",
    )
