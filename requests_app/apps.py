from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Compute requests"

    def ready(self):
        from allocator.signals import change_settled

        from .receivers import on_change_settled

        change_settled.connect(on_change_settled, dispatch_uid="requests_app.on_change_settled")
