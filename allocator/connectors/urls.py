from django.urls import path

from . import views

app_name = "connectors"
urlpatterns = [
    path("ops/connectors/", views.connectors_page, name="ops"),
    path("ops/connectors/<int:pk>/sync/", views.connector_sync_now, name="sync"),
    path("ops/usage/", views.usage_report_page, name="usage"),
]
