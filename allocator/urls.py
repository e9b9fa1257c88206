from django.urls import path

from . import balance_views, move_views, views

app_name = "allocator"
urlpatterns = [
    path("pools/", views.pool_list, name="pool-list"),
    path("pools/<int:pk>/", views.pool_detail, name="pool-detail"),
    path("ops/", views.ops_console, name="ops"),
    path("ops/capacity/", views.ops_capacity, name="ops-capacity"),
    path("ops/changes/<int:change_id>/retry/", views.ops_retry, name="ops-retry"),
    path("ops/move/", move_views.ops_move, name="ops-move"),
    path("ops/reclaims/<int:pk>/", move_views.reclaim_edit, name="reclaim-edit"),
    path("ops/reclaims/<int:pk>/cancel/", move_views.reclaim_cancel, name="reclaim-cancel"),
    path(
        "ops/projects/<int:pk>/wind-down/", move_views.project_wind_down, name="project-wind-down"
    ),
    path("allocations/<int:pk>/release/", views.allocation_release, name="allocation-release"),
    path("balance/", balance_views.balance_page, name="balance"),
]
