"""The app's URLs plus the bench's baseline view (ROOT_URLCONF in config/settings/bench.py)."""

from django.urls import include, path

from bench import views

urlpatterns = [
    path("bench/baseline/", views.baseline, name="bench-baseline"),
    path("", include("config.urls")),
]
