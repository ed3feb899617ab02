from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from generation import accounts, dashboard, library, workspace
from generation import urls as generation_urls
from generation import views as generation_views

urlpatterns = [
    path("", workspace.workspace, name="workspace"),
    path("library/", library.index, name="library"),
    path("library/<str:kind>/<int:pk>/", library.detail, name="library-detail"),
    path("library/<str:kind>/<int:pk>/delete/", library.delete, name="library-delete"),
    path("library/image/<int:pk>/reference/", library.use_as_reference, name="library-reference"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("events/jobs", generation_views.job_events, name="job-events"),
    path("accounts/login/", auth_views.LoginView.as_view(
        redirect_authenticated_user=True, extra_context={"signup_enabled": lambda: settings.OURVIDZ_SIGNUP}),
        name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/", include(generation_urls.api)),
    path("api-auth/", include("rest_framework.urls")),
    path("healthz", generation_views.healthz, name="healthz"),
    path("media/<str:bucket>/<path:name>", generation_views.media, name="media"),
]
