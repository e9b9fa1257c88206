from django.urls import path

from . import balance_views, views

app_name = "allocator"
urlpatterns = [
    path("pools/", views.pool_list, name="pool-list"),
    path("pools/<int:pk>/", views.pool_detail, name="pool-detail"),
    path("ops/", views.ops_console, name="ops"),
    path("ops/capacity/", views.ops_capacity, name="ops-capacity"),
    path("ops/reclaim/", views.ops_reclaim, name="ops-reclaim"),
    path("ops/transfer/", views.ops_transfer, name="ops-transfer"),
    path("ops/changes/<int:change_id>/retry/", views.ops_retry, name="ops-retry"),
    path("allocations/<int:pk>/release/", views.allocation_release, name="allocation-release"),
    path("balance/", balance_views.balance_page, name="balance"),
]
