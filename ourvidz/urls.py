from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from generation import urls as generation_urls
from generation import views as generation_views

urlpatterns = [
    path("", RedirectView.as_view(url="/api/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/", include(generation_urls.api)),
    path("api-auth/", include("rest_framework.urls")),
    path("healthz", generation_views.healthz, name="healthz"),
    path("media/<str:bucket>/<path:name>", generation_views.media, name="media"),
]
