import os

from celery import Celery
from django_structlog.celery.steps import DjangoStructLogInitStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("allotment")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Worker-side structured logging: binds the sending request's request_id to the task's logs.
app.steps["worker"].add(DjangoStructLogInitStep)


@app.task(name="config.ping")
def ping(value):
    """Round trip used by the health check and the broker test."""
    return value
