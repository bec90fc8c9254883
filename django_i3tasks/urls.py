from django.urls import path

from . import views

app_name = "django_i3tasks"

urlpatterns = [
    path("tasks-push/", views.push, name="push"),
    path("tasks-beat/", views.beat, name="beat"),
    path("tasks-status/<str:execution_uuid>/", views.status, name="status"),
    path("tasks-health/", views.health, name="health"),
    path("tasks-metrics/", views.metrics_view, name="metrics"),
]
