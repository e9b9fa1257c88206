from django.urls import path

from . import views

app_name = "requests"
urlpatterns = [
    path("", views.request_list, name="list"),
    path("new/", views.request_create, name="create"),
    path("inbox/", views.approvals_inbox, name="inbox"),
    path("inbox/decide/", views.approvals_inbox_decide, name="inbox-decide"),
    path("<int:pk>/", views.request_detail, name="detail"),
    path("<int:pk>/edit/", views.request_edit, name="edit"),
    path("<int:pk>/submit/", views.request_submit, name="submit"),
    path("<int:pk>/withdraw/", views.request_withdraw, name="withdraw"),
    path("<int:pk>/decide/", views.request_decide, name="decide"),
]
