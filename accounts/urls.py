from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.SignInView.as_view(), name="login"),
    path("logout/", views.SignOutView.as_view(), name="logout"),
    path("oidc/login/", views.ProviderSignInStartView.as_view(), name="oidc_authentication_init"),
    # The redirect URI to register at the identity provider (README).
    path(
        "oidc/callback/", views.ProviderCallbackView.as_view(), name="oidc_authentication_callback"
    ),
]
