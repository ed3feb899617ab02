"""The pages' routes (and the files and health check they need), mounted at the root by ourvidz.urls."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.urls import path

from . import account, accounts, dashboard, health, library, live, media, metrics, workspace

urlpatterns = [
    path("", workspace.workspace, name="workspace"),
    path("library/", library.index, name="library"),
    path("library/<str:kind>/<int:pk>/", library.detail, name="library-detail"),
    path("library/<str:kind>/<int:pk>/delete/", library.delete, name="library-delete"),
    path("library/<str:kind>/<int:pk>/keep/", library.keep, name="library-keep"),
    path("library/<str:kind>/<int:pk>/download/", library.download, name="library-download"),
    path("library/image/<int:pk>/reference/", library.use_as_reference, name="library-reference"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("account/", account.account, name="account-page"),
    path("events/jobs", live.job_events, name="job-events"),
    path("accounts/login/", auth_views.LoginView.as_view(
        redirect_authenticated_user=True, extra_context={"signup_enabled": lambda: settings.OURVIDZ_SIGNUP}),
        name="login"),
    path("accounts/logout/", accounts.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("media/<str:bucket>/<path:name>", media.media, name="media"),
]
