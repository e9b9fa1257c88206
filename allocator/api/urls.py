from rest_framework.routers import SimpleRouter

from .divisions import DivisionViewSet
from .views import AllocationViewSet, CapacityChangeViewSet, PoolViewSet

router = SimpleRouter()
router.register("divisions", DivisionViewSet, basename="division")
router.register("pools", PoolViewSet, basename="pool")
router.register("allocations", AllocationViewSet, basename="allocation")
router.register("capacity-changes", CapacityChangeViewSet, basename="capacity-change")
urlpatterns = router.urls
