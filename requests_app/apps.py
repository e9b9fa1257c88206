from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Compute requests"

    def ready(self):
        from allocator.signals import (
            change_of_request_requested,
            change_origin_requested,
            change_settled,
        )

        from .receivers import on_change_settled
        from .selectors import change_ids_for_requests, request_ids_for_changes

        change_settled.connect(on_change_settled, dispatch_uid="requests_app.on_change_settled")
        change_origin_requested.connect(
            request_ids_for_changes, dispatch_uid="requests_app.request_ids_for_changes"
        )
        change_of_request_requested.connect(
            change_ids_for_requests, dispatch_uid="requests_app.change_ids_for_requests"
        )
