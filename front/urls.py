from django.urls import path

from . import views

# The project pages keep the "org" namespace their links have always used (templates, emails).
app_name = "org"
urlpatterns = [
    path("projects/", views.project_list, name="project-list"),
    path("projects/<int:pk>/", views.project_detail, name="project-detail"),
]
