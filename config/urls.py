from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from front import views as front_views

api_v1 = [
    path("", include("allocator.api.urls")),
    path("", include("requests_app.api.urls")),
    path("", include("org.api.urls")),
    path("", include("front.audit_api")),
    path("", include("front.exports")),
    path("", include("notifications.api")),
    path("", include("allocator.connectors.api")),
    path("", include("accounts.api")),
]

urlpatterns = [
    path("", front_views.overview, name="overview"),
    path("accounts/", include("accounts.urls")),
    path("requests/", include("requests_app.urls")),
    path("", include("allocator.urls")),
    path("", include("allocator.connectors.urls")),
    path("", include("front.urls")),
    path("notifications/", include("notifications.urls")),
    path("admin/", admin.site.urls),
    path("", include("ops.urls")),
    # Browsers ask for /favicon.ico on every page that names no icon (the admin, the API docs).
    path(
        "favicon.ico",
        serve,
        {"path": "img/favicon.svg", "document_root": settings.BASE_DIR / "static"},
        name="favicon",
    ),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI sets inline styles from its own bundle: allowed on this page only.
    path(
        "api/docs/",
        csp_update({"style-src": ["'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="schema")
        ),
        name="api-docs",
    ),
]

handler400 = "common.views.bad_request"
handler404 = "common.views.not_found"
# A database outage answers 503 (ops.views); anything else the app's 500.
handler500 = "ops.views.server_error"
