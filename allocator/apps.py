from django.apps import AppConfig


class AllocatorConfig(AppConfig):
    name = "allocator"
    verbose_name = "GPU pools and allocations"

    def ready(self):
        from .checks import register_checks

        register_checks()
