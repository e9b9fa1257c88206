from django.contrib import admin

from common.admin_mixins import ReadOnlyAdmin

from .models import (
    Allocation,
    AllocationChange,
    CapacityChange,
    DivisionShare,
    LedgerEntry,
    Pool,
    Reclaim,
)


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["__str__", "cluster", "gpu_model"]
    search_fields = ["cluster", "gpu_model"]


@admin.register(CapacityChange)
class CapacityChangeAdmin(admin.ModelAdmin):
    list_display = ["pool", "kind", "delta", "effective_at", "created_by"]
    list_filter = ["kind", "pool"]

    # Capacity moves through the ops console, where a decrease that would break the invariant
    # is refused; here it is read-only so the admin cannot bypass that check.
    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DivisionShare)
class DivisionShareAdmin(admin.ModelAdmin):
    list_display = ["division", "pool", "gpus", "updated_at", "updated_by"]
    list_filter = ["division", "pool"]

    # Shares change on the balance page, as an audited executive decision.
    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AllocationChange)
class AllocationChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "pool", "project", "gpus", "start", "end", "status", "attempts"]
    list_filter = ["status", "pool"]


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    list_display = ["id", "pool", "project", "gpus", "start", "end", "state"]
    list_filter = ["state", "pool"]
    list_select_related = ["pool", "project"]


@admin.register(Reclaim)
class ReclaimAdmin(ReadOnlyAdmin):
    list_display = ["allocation", "new_gpus", "new_end", "effective_at", "status"]
    list_filter = ["status"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "kind", "allocation", "change", "gpus", "start", "end", "actor"]
    list_filter = ["kind"]
