"""Settings refuse to start with DEBUG on where the app answers other machines."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings.safety import refuse_debug_in_public

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "hosts", [["allotment.example.org"], ["localhost", "10.0.0.5"], ["*"], [".example.org"]]
)
def test_debug_with_a_public_host_is_refused(hosts):
    with pytest.raises(ImproperlyConfigured, match="DEBUG is on and ALLOWED_HOSTS names"):
        refuse_debug_in_public(debug=True, allowed_hosts=hosts)


@pytest.mark.parametrize("hosts", [["localhost", "127.0.0.1", "[::1]"], ["app.localhost"], []])
def test_debug_on_this_machine_only_is_allowed(hosts):
    refuse_debug_in_public(debug=True, allowed_hosts=hosts)


def test_debug_off_is_allowed_anywhere():
    refuse_debug_in_public(debug=False, allowed_hosts=["allotment.example.org", "*"])


def test_the_demo_settings_refuse_to_start_with_debug_and_a_public_host():
    # given the demo settings (DEBUG on by default) told to answer a public name
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.demo", ALLOWED_HOSTS="allotment.example.org")
    # when any management command starts
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # then it stops with the reason
    assert result.returncode != 0
    assert "DEBUG is on and ALLOWED_HOSTS names allotment.example.org" in result.stderr
