from django.contrib import admin

from .models import Email, Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "recipient", "kind", "message", "read_at"]
    list_filter = ["kind"]
    search_fields = ["message"]
    raw_id_fields = ["recipient"]


@admin.register(Email)
class EmailAdmin(admin.ModelAdmin):
    """Read-only: the outbox is written by the sender alone (a stray edit could resend)."""

    list_display = ["created_at", "address", "subject", "state", "attempts", "last_error"]
    list_filter = ["state"]
    search_fields = ["address", "subject"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
