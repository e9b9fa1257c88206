"""Event metrics: counted where the event happens, in whichever process it happens.

A leaf module (it imports only prometheus_client), so any app may count into it.

Many processes: with PROMETHEUS_MULTIPROC_DIR set (gunicorn and the Celery workers in the
recipes), each process writes its samples to files in that folder and a scrape sums them
(prometheus_client's multiprocess mode). Numbers that live in the database — GPUs per pool,
queue depth, failed changes — are not counted here but read at scrape time (ops/metrics.py), so
they are right whatever the number of processes and machines.
"""

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

http_requests = Counter(
    "allotment_http_requests",
    "HTTP requests answered, by view (URL name), method and status code.",
    ["view", "method", "status"],
)
http_latency = Histogram(
    "allotment_http_request_duration_seconds",
    "Time to answer an HTTP request, by view.",
    ["view"],
    buckets=LATENCY_BUCKETS,
)
celery_tasks = Counter(
    "allotment_celery_tasks",
    "Celery tasks finished, by task name and state (SUCCESS, FAILURE, RETRY).",
    ["task", "state"],
)
celery_task_duration = Histogram(
    "allotment_celery_task_duration_seconds",
    "Run time of a Celery task, by task name.",
    ["task"],
    buckets=LATENCY_BUCKETS,
)
approval_to_allocated = Histogram(
    "allotment_approval_to_allocated_seconds",
    "From the final approval to the GPUs being allocated (change applied).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
change_outcomes = Counter(
    "allotment_change_outcomes",
    "What the apply engine did with a change: applied, waiting, needs_review, failed, retried.",
    ["outcome"],
)
notification_emails = Counter(
    "allotment_notification_emails",
    "Notification emails handed to the mail server (result: sent) or not (result: failed).",
    ["result"],
)
preview_simulations = Counter(
    "allotment_preview_simulations",
    "Pool simulations run for the approvals inbox's previews (kind: baseline, impact, "
    "competition); none while the stored previews stand.",
    ["kind"],
)
