from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/", include("generation.api.urls")),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("generation.web.urls")),
]
