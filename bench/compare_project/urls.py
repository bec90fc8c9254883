from django.urls import include, path

from . import views

urlpatterns = [
    path("i3/", include("django_i3tasks.urls")),
    path("ceiling/", views.ceiling),
    path("floor/", views.floor),
    path("naive-floor/", views.naive_floor),
]
