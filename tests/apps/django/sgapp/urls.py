from django.urls import path

from . import views

urlpatterns = [
    path("login", views.login_view),
    path("logout", views.logout_view),
    path("anon", views.anon_view),
    path("whoami", views.whoami_view),
]
