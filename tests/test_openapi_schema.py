"""The whole API's OpenAPI schema validates with no warning (drf-spectacular's own check), the way
`manage.py spectacular --validate --fail-on-warn` runs it."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_whole_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for path in (
        "/api/v1/requests/",
        "/api/v1/pools/",
        "/api/v1/allocations/",
        "/api/v1/capacity-changes/",
        "/api/v1/divisions/",
        "/api/v1/teams/",
        "/api/v1/projects/",
        "/api/v1/audit/",
        "/api/v1/auth/token/",
        "/api/v1/requests/{id}/approve/",
        "/api/v1/me/",
        "/api/v1/delegations/",
    ):
        assert f"  {path}:" in text, path
