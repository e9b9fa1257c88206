"""The app's URLs plus the bench's baseline views (ROOT_URLCONF in config/settings/bench.py)."""

from django.urls import include, path

from bench import views

urlpatterns = [
    path("bench/baseline/", views.baseline, name="bench-baseline"),
    path("bench/api-baseline/", views.api_baseline, name="bench-api-baseline"),
    path("", include("config.urls")),
]
