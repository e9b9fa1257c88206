from django.db import models


class Heartbeat(models.Model):
    """The last time a periodic task ran: `beat` proves that celery beat sends and a worker
    runs what it sends (readiness, ops/health.py)."""

    name = models.CharField(max_length=60, primary_key=True)
    at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
