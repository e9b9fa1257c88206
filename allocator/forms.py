"""Forms of the pool pages and the ops console: they parse input; the services decide."""

from django import forms
from django.core.exceptions import ValidationError

from .models import MAX_GPUS, MAX_NOTICE_HOURS, CapacityChange, Pool

DATETIME_WIDGET = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class CapacityChangeForm(forms.Form):
    pool = forms.ModelChoiceField(queryset=Pool.objects.all())
    kind = forms.ChoiceField(choices=CapacityChange.Kind.choices)
    delta = forms.IntegerField(
        label="GPUs (+ added, − removed)",
        min_value=-MAX_GPUS,
        max_value=MAX_GPUS,
        help_text="Positive for an arrival or a repair coming back, negative for a decommission.",
    )
    effective_at = forms.DateTimeField(label="Effective at (UTC)", widget=DATETIME_WIDGET)
    note = forms.CharField(max_length=500, required=False)

    prefix = "capacity"


class ReclaimForm(forms.Form):
    """The terms of a reclaim (the scheduled-reclaim edit form reuses its fields). The
    allocation is never typed: the guided move picks it (move_views)."""

    new_gpus = forms.IntegerField(
        label="GPUs it keeps", min_value=0, max_value=MAX_GPUS, help_text="0: all go back."
    )
    new_end = forms.DateTimeField(
        label="New end (UTC, optional)", required=False, widget=DATETIME_WIDGET
    )
    notice_hours = forms.IntegerField(
        label="Notice (hours)", min_value=0, max_value=MAX_NOTICE_HOURS, required=False
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    prefix = "reclaim"


class ReclaimChangeForm(forms.Form):
    """New terms for a scheduled reclaim (allocation and destination stay)."""

    new_gpus = ReclaimForm.base_fields["new_gpus"]
    new_end = ReclaimForm.base_fields["new_end"]
    notice_hours = forms.IntegerField(
        label="Notice from now (hours)",
        min_value=0,
        max_value=MAX_NOTICE_HOURS,
        required=False,
    )
    reason = ReclaimForm.base_fields["reason"]


class WindDownForm(forms.Form):
    when = forms.ChoiceField(
        label="Takes effect",
        choices=[("notice", "After the notice"), ("expected_end", "On the project's end date")],
        initial="notice",
        widget=forms.RadioSelect,
    )
    notice_hours = forms.IntegerField(
        label="Notice (hours)",
        min_value=0,
        max_value=MAX_NOTICE_HOURS,
        required=False,
        help_text="Empty: the default notice.",
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))


class ReleaseForm(forms.Form):
    """The team gives back all, some GPUs, or ends earlier: confirmed on a page of its own."""

    how = forms.ChoiceField(
        label="Give back",
        choices=[
            ("all", "All its GPUs, now"),
            ("gpus", "Some GPUs, from now on"),
            ("end", "End it earlier"),
        ],
        initial="all",
        widget=forms.RadioSelect,
    )
    gpus = forms.IntegerField(
        label="GPUs to give back", min_value=1, max_value=MAX_GPUS, required=False
    )
    end = forms.DateTimeField(label="New end (UTC)", required=False, widget=DATETIME_WIDGET)

    def clean(self):
        data = super().clean()
        if data.get("how") == "gpus" and data.get("gpus") is None:
            self.add_error("gpus", "Say how many GPUs to give back.")
        if data.get("how") == "end" and data.get("end") is None:
            self.add_error("end", "Choose the new end.")
        return data


def add_service_errors(form: forms.Form, error: ValidationError, mapping: dict | None = None):
    """Put a service's ValidationError on the form's fields (unknown keys become form errors)."""
    mapping = mapping or {}
    if hasattr(error, "error_dict"):
        for key, messages in error.message_dict.items():
            field = mapping.get(key, key)
            form.add_error(field if field in form.fields else None, messages)
    else:
        form.add_error(None, error.messages)
