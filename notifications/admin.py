from django.contrib import admin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "recipient", "kind", "message", "read_at"]
    list_filter = ["kind"]
    search_fields = ["message"]
    raw_id_fields = ["recipient"]
