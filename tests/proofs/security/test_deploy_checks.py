"""S1 (PROOFS.md 2.7): `manage.py check --deploy --fail-level WARNING` is clean under the
production settings (config.settings.base with its secrets from the environment), and the
security-relevant settings hold."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support import figures

ROOT = Path(__file__).resolve().parents[3]


def test_check_deploy_is_clean_with_production_settings():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "ALLOTMENT_", "TEST_", "DEBUG", "SECURE_", "SESSION_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.base",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="allotment.example.org",
        ALLOTMENT_SITE_URL="https://allotment.example.org",
        DEBUG="false",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    warnings = result.stderr.count("(security.W") + result.stderr.count("WARNINGS:")
    figures.set("check --deploy warnings", warnings if result.returncode else 0)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_defaults():
    from config.settings import base

    assert base.DEBUG is False
    assert "*" not in base.ALLOWED_HOSTS
    assert base.SECURE_SSL_REDIRECT and base.SECURE_HSTS_SECONDS >= 31536000
    assert base.SESSION_COOKIE_SECURE and base.CSRF_COOKIE_SECURE and base.SESSION_COOKIE_HTTPONLY
    assert base.X_FRAME_OPTIONS == "DENY"
    script_src = base.CONTENT_SECURITY_POLICY["DIRECTIVES"]["script-src"]
    assert all("unsafe" not in source for source in script_src)
    assert base.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert base.AXES_FAILURE_LIMIT == 5
