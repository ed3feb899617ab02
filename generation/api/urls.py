"""The API's routes, mounted under /api/ by ourvidz.urls."""

from django.urls import include, path, re_path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("images", views.ImageViewSet, basename="image")
router.register("videos", views.VideoViewSet, basename="video")
router.register("references", views.ReferenceImageViewSet, basename="reference")

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("job-types/", views.JobTypesView.as_view(), name="job-types"),
    path("queues/", views.QueuesView.as_view(), name="queues"),
    path("negative-prompt/", views.NegativePromptView.as_view(), name="negative-prompt"),
    path("account/", views.AccountView.as_view(), name="account"),
    path("account/ledger/", views.LedgerView.as_view({"get": "list"}), name="ledger"),
    path("account/webhook-secret/", views.WebhookSecretView.as_view(), name="webhook-secret"),
    path("", include(router.urls)),
    # Last: a path ending in a slash that nothing above serves (one without is first redirected to it).
    re_path(r"^.*/$", views.NotFoundView.as_view()),
]
