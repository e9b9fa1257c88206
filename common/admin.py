from django.contrib import admin

from .admin_mixins import ReadOnlyAdmin
from .models import IdempotencyRecord


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["key", "user", "method", "path", "status_code", "created_at"]
    search_fields = ["key", "path"]
