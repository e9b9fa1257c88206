from django.contrib import admin

from common.admin_mixins import ReadOnlyAdmin

from .models import ApprovalStep, ComputeRequest


class ApprovalStepInline(admin.TabularInline):
    model = ApprovalStep
    extra = 0
    can_delete = False
    readonly_fields = ["round", "stage", "decision", "decider", "comment", "decided_at"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ComputeRequest)
class ComputeRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "pool", "gpus", "start", "end", "priority", "status"]
    list_filter = ["status", "priority", "pool", "project__team__division"]
    search_fields = ["project__name", "goal"]
    list_select_related = ["project", "pool"]
    inlines = [ApprovalStepInline]
    # Status moves only through the workflow services, never by editing a row here.
    readonly_fields = ["status", "round", "needs_executive", "executive_reasons", "change"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApprovalStep)
class ApprovalStepAdmin(ReadOnlyAdmin):
    list_display = ["request", "round", "stage", "decision", "decider", "decided_at"]
    list_filter = ["stage", "decision"]
