from rest_framework.routers import SimpleRouter

from .views import ComputeRequestViewSet

router = SimpleRouter()
router.register("requests", ComputeRequestViewSet, basename="request")
urlpatterns = router.urls
