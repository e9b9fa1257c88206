from django.urls import path

from . import balance_views, views

app_name = "allocator"
urlpatterns = [
    path("pools/", views.pool_list, name="pool-list"),
    path("pools/<int:pk>/", views.pool_detail, name="pool-detail"),
    path("ops/", views.ops_console, name="ops"),
    path("balance/", balance_views.balance_page, name="balance"),
]
