# The image every process of the recipes runs (compose.yaml, deploy/kubernetes/): web (gunicorn),
# worker and beat (celery), the migration job. Static files are collected at build time and
# served by WhiteNoise with hashed names.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=config.settings.base STATIC_ROOT=/app/var/static

WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
RUN pip install . \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 --home /app allotment \
    && mkdir -p /app/var/beat /tmp/prometheus \
    && chown -R allotment /app/var /tmp/prometheus

USER 10001
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
