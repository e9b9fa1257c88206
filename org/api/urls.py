from django.urls import path
from rest_framework.routers import SimpleRouter

from .views import ProjectViewSet, TeamViewSet, TokenView

router = SimpleRouter()
router.register("teams", TeamViewSet, basename="team")
router.register("projects", ProjectViewSet, basename="project")
urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    *router.urls,
]
