"""The deployment recipes (compose.yaml, deploy/kubernetes/) parse, pass the Kubernetes schemas,
and set every environment variable the settings read; docs/deploy.md describes them."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def settings_env_vars() -> set[str]:
    """Every variable config/settings/base.py (production), config/gunicorn.py and the ops
    app read."""
    names = set()
    text = (ROOT / "config" / "settings" / "base.py").read_text()
    names |= set(re.findall(r"env(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text))
    for path in [ROOT / "config" / "gunicorn.py", *sorted((ROOT / "ops").rglob("*.py"))]:
        names |= set(
            re.findall(r"os\.environ(?:\.get)?[\(\[]\s*[\"']([A-Z][A-Z0-9_]+)", path.read_text())
        )
    return names


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def k8s_documents() -> list[dict]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_settings_read_the_variables_we_think():
    found = settings_env_vars()
    # a sample of each kind, so the scan above cannot silently find nothing
    assert {
        "SECRET_KEY",
        "DATABASE_URL",
        "CELERY_BEAT_SCHEDULE_FILENAME",
        "WEB_CONCURRENCY",
    } <= found
    assert {"DB_IDLE_IN_TX_TIMEOUT_MS", "PROMETHEUS_MULTIPROC_DIR", "CELERY_METRICS_PORT"} <= found


def test_compose_sets_every_variable_for_every_app_service():
    services = compose()["services"]
    wanted = settings_env_vars()
    for name in ("web", "worker", "beat", "migrate"):
        missing = wanted - set(services[name]["environment"])
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_kubernetes_sets_every_variable_through_the_configmap_and_the_secret():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    config = set(docs[("ConfigMap", "allotment-config")]["data"])
    secret = set(docs[("Secret", "allotment-secrets")]["stringData"])
    assert not config & secret
    missing = settings_env_vars() - config - secret
    assert not missing, sorted(missing)
    for doc in docs.values():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
                assert sources == {"allotment-config", "allotment-secrets"}, doc["metadata"]
                assert container["resources"]["requests"] and container["resources"]["limits"]


def test_compose_has_the_services_health_checks_and_volumes():
    recipe = compose()
    services = recipe["services"]
    assert {"web", "worker", "beat", "postgres", "redis", "migrate"} <= set(services)
    for name in ("web", "worker", "beat", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "worker_health" in " ".join(services["worker"]["healthcheck"]["test"])
    assert {"pgdata", "redisdata"} <= set(recipe["volumes"])
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "noeviction" in redis
    # the app waits for the migration to finish
    assert services["web"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_pass_the_kubernetes_schema(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_kubernetes_probes_one_beat_a_migration_job_and_disruption_budgets():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    web = docs[("Deployment", "allotment-web")]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    beat = docs[("Deployment", "allotment-beat")]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    job = docs[("Job", "allotment-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][-2:] == ["migrate", "--noinput"]
    budgets = {name for kind, name in docs if kind == "PodDisruptionBudget"}
    assert {"allotment-web", "allotment-worker"} <= budgets
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {
        p.name for p in MANIFESTS if p.name != "secret.example.yaml"
    }


def test_the_deploy_guide_covers_both_recipes_and_the_backups():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for needed in (
        "compose.yaml",
        "deploy/kubernetes",
        "pg_dump",
        "pg_restore",
        "ledger_verify",
        "/healthz",
        "/readyz",
        "/metrics",
        "migrate",
    ):
        assert needed in guide, needed


def test_the_grafana_dashboard_uses_only_metrics_we_expose():
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "allotment-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"\b(allotment_[a-z_]+)", exprs))
    exposed = {
        "allotment_pool_gpus",
        "allotment_division_gpus_held",
        "allotment_pool_queue_depth",
        "allotment_pool_oldest_waiting_seconds",
        "allotment_approval_to_allocated_seconds_bucket",
        "allotment_changes",
        "allotment_apply_attempts_total",
        "allotment_change_outcomes_total",
        "allotment_http_requests_total",
        "allotment_http_request_duration_seconds_bucket",
        "allotment_celery_tasks_total",
        "allotment_celery_task_duration_seconds_bucket",
        "allotment_notification_emails_total",
    }
    assert used == exposed
