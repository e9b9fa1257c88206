"""The OpenAPI schema of the org, divisions, audit and notifications endpoints (and the token
endpoint) validates with no warning; /api/docs/ serves Swagger UI from the app's own static
files."""

import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.routers import SimpleRouter

from allocator.api.divisions import DivisionViewSet

MY_PATHS = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/divisions/": {"get"},
    "/api/v1/divisions/{id}/": {"get"},
    "/api/v1/divisions/{id}/share/": {"post", "patch"},
    "/api/v1/teams/": {"get"},
    "/api/v1/teams/{id}/": {"get"},
    "/api/v1/projects/": {"get", "post"},
    "/api/v1/projects/{id}/": {"get"},
    "/api/v1/audit/": {"get"},
    "/api/v1/audit/{id}/": {"get"},
    "/api/v1/notifications/": {"get"},
    "/api/v1/notifications/{id}/": {"get"},
    "/api/v1/notifications/unread-count/": {"get"},
    "/api/v1/notifications/mark-read/": {"post"},
}


@pytest.fixture
def my_schema():
    divisions = SimpleRouter()
    divisions.register("divisions", DivisionViewSet, basename="division")
    patterns = [
        path(
            "api/v1/",
            include(
                [
                    path("", include("org.api.urls")),
                    path("", include(divisions.urls)),
                    path("", include("front.audit_api")),
                    path("", include("notifications.api")),
                ]
            ),
        )
    ]
    GENERATOR_STATS.reset()
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)
    warnings = dict(GENERATOR_STATS._warn_cache)
    errors = dict(GENERATOR_STATS._error_cache)
    GENERATOR_STATS.reset()
    return schema, warnings, errors


def test_schema_valid_without_warnings(my_schema):
    schema, warnings, errors = my_schema
    assert warnings == {}
    assert errors == {}
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    paths = {p: set(ops) - {"parameters"} for p, ops in schema["paths"].items()}
    assert paths == MY_PATHS


def test_every_operation_documents_its_responses(my_schema):
    schema, _, _ = my_schema
    for route, operations in schema["paths"].items():
        for method, operation in operations.items():
            ok = [code for code in operation["responses"] if code.startswith("2")]
            assert ok, f"{method} {route} documents no success response"
            body = operation["responses"][ok[0]].get("content", {})
            assert "application/json" in body, f"{method} {route} documents no JSON body"
            if method in ("post", "patch"):
                assert "requestBody" in operation or route.endswith("mark-read/"), route


def test_create_and_decide_document_errors(my_schema):
    schema, _, _ = my_schema
    for route, method in [
        ("/api/v1/projects/", "post"),
        ("/api/v1/divisions/{id}/share/", "post"),
        ("/api/v1/auth/token/", "post"),
    ]:
        responses = schema["paths"][route][method]["responses"]
        assert "400" in responses
        ref = responses["400"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ApiError")


def test_schema_endpoint_serves_my_paths(client, requester):
    client.force_login(requester)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert set(MY_PATHS) <= set(response.json()["paths"])


def test_docs_reference_no_external_host(client, requester):
    client.force_login(requester)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert urls, "the page loads its assets from somewhere"
    for url in urls:
        assert not re.match(r"^(https?:)?//", url), url
    assert "cdn" not in html.lower()
    static_prefix = "/" + settings.STATIC_URL.lstrip("/")
    for url in urls:
        if url.startswith(static_prefix):
            # a file the app serves itself (whitenoise in production)
            assert finders.find(url[len(static_prefix) :].split("?")[0]), url
        else:
            # the split view's own script: local, and naming no external host either
            body = client.get(url)
            assert body.status_code == 200, url
            text = body.content.decode()
            assert not re.search(r"""["'](https?:)?//""", text), url
