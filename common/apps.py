from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "common"
    verbose_name = "Common"

    def ready(self):
        from django.db.backends.signals import connection_created

        from .db import register_utc_dumper

        connection_created.connect(register_utc_dumper, dispatch_uid="common.utc_dumper")
