from celery import shared_task


@shared_task(name="ops.tasks.beat_heartbeat", ignore_result=True)
def beat_heartbeat():
    from .health import heartbeat_record

    heartbeat_record(name="beat")
