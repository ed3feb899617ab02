"""The JSON API (DRF) plus the health check and signed local media. Thin: logic lives in modules."""

import json
from dataclasses import asdict

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from . import brokers, capabilities, events, job_types, negative_prompts, queues, references, storage, submission
from .models import Image, Job, ReferenceImage, Video
from .serializers import ImageSerializer, JobRequestSerializer, JobSerializer, ReferenceImageSerializer, VideoSerializer


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer

    def get_serializer_class(self):
        # The request fields for POST: the browsable API renders its submission form from them.
        if self.request.method == "POST" and self.action in ("create", "list"):
            return JobRequestSerializer
        return JobSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "user": self.request.user}

    def get_queryset(self):
        jobs = Job.objects.filter(user=self.request.user).select_related("video").prefetch_related("images")
        for name in ("status", "job_type", "queue"):
            if self.request.query_params.get(name):
                jobs = jobs.filter(**{name: self.request.query_params[name]})
        return jobs

    @extend_schema(request=JobRequestSerializer, responses={201: JobSerializer, 200: JobSerializer},
                   parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)])
    def create(self, request):
        """Queue a generation job. The same Idempotency-Key returns the first job instead of a second."""
        try:
            job, created = submission.submit(request.user, request.data,
                                              request.headers.get("Idempotency-Key"))
        except submission.InvalidJob as exc:
            raise ValidationError(exc.errors) from exc
        except submission.QueueUnavailable:
            return Response({"detail": "The job queue is unavailable; try again shortly."},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(JobSerializer(job, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued job (it never runs) or a running one (it stops at its next step)."""
        job = self.get_object()
        if not submission.cancel(job):
            return Response({"detail": f"The job is already {job.status}."}, status=status.HTTP_409_CONFLICT)
        job.refresh_from_db()
        return Response(JobSerializer(job, context=self.get_serializer_context()).data)


class AssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                   viewsets.GenericViewSet):
    """Images or videos of the requesting user, filterable by job_type and status."""

    model = None

    def get_queryset(self):
        assets = self.model.objects.filter(user=self.request.user).select_related("job")
        if self.request.query_params.get("job_type"):
            assets = assets.filter(job__job_type=self.request.query_params["job_type"])
        if self.request.query_params.get("status"):
            assets = assets.filter(status=self.request.query_params["status"])
        return assets
    # Deleting a row deletes its files too: see generation.receivers.delete_files.


class ImageViewSet(AssetViewSet):
    model = Image
    serializer_class = ImageSerializer

    @extend_schema(request=None, responses={201: ReferenceImageSerializer})
    @action(detail=True, methods=["post"])
    def reference(self, request, pk=None):
        """Keep a copy of this image as a reference image for later jobs (the same image gives the same one)."""
        try:
            ref = references.reference_from_image(self.get_object())
        except references.InvalidReference as exc:
            raise ValidationError({"image": [str(exc)]}) from exc
        return Response(ReferenceImageSerializer(ref, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)


class VideoViewSet(AssetViewSet):
    model = Video
    serializer_class = VideoSerializer


class ReferenceImageViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                            mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = ReferenceImageSerializer

    def get_queryset(self):
        return ReferenceImage.objects.filter(user=self.request.user)

    def create(self, request):
        """Upload a reference image (PNG, JPEG or WebP, size-limited) as multipart field `file`."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            ref = references.save_reference(request.user, serializer.validated_data["file"])
        except references.InvalidReference as exc:
            raise ValidationError({"file": [str(exc)]}) from exc
        return Response(self.get_serializer(ref).data, status=status.HTTP_201_CREATED)


def job_type_rows():
    """The ten job types with their parameters in this server's profile, and the reference types their
    pool accepts now (the API's /api/job-types/ and the Workspace read this)."""
    rows = []
    for jt in job_types.JOB_TYPES.values():
        rows.append({
            **asdict(jt), "queue": jt.queue, "kind": jt.kind, "bucket": jt.bucket,
            "num_images": list(job_types.NUM_IMAGES_CHOICES) if jt.batched else [1],
            "aspect_ratios": job_types.aspect_ratios(jt), "render": job_types.render_params(jt),
            "reference_types": sorted(capabilities.reference_types(jt)),
        })
    return rows


class JobTypesView(APIView):
    def get(self, request):
        """The ten job types with their parameters and the reference types accepted now."""
        return Response(job_type_rows())


class NegativePromptView(APIView):
    def get(self, request):
        """The negative prompt a job would get (`job_type`, `prompt`, `negative_prompt`), built exactly as
        submission builds it. POST takes the same fields as a JSON body, for long prompts."""
        return Response(negative_prompt_preview(request.query_params))

    def post(self, request):
        return Response(negative_prompt_preview(request.data))


def negative_prompt_preview(params):
    jt = job_types.JOB_TYPES.get(params.get("job_type", "sdxl_image_fast"))
    if jt is None:
        raise ValidationError({"job_type": ["Unknown job type."]})
    user_negative = params.get("negative_prompt", "")
    if jt.pool != "sdxl":  # WAN jobs carry only the user's own negative prompt
        return {"negative_prompt": user_negative, "multi_party": [], "dropped": []}
    built = negative_prompts.build(params.get("prompt", ""), user_negative)
    return {"negative_prompt": built.text, "multi_party": built.multi_party, "dropped": built.dropped}


class QueuesView(APIView):
    def get(self, request):
        """Per queue: length, workers online, average wait, jobs per hour and error rate (last hour)."""
        return Response(queues.queue_stats())


@require_GET
def healthz(request):
    """200 when the database, the broker and storage all answer; 503 naming what does not."""
    checks = {}
    for name, probe in (("database", _check_database), ("broker", lambda: brokers.client().ping()),
                        ("storage", lambda: storage.get_storage().check())):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {exc}"
    healthy = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@require_GET
def media(request, bucket, name):
    """Serve a locally stored file behind a signed URL that has not expired."""
    backend = storage.get_storage()
    if not isinstance(backend, storage.LocalStorage) or not backend.verify(
            bucket, name, request.GET.get("expires"), request.GET.get("signature")):
        raise Http404
    try:
        path = backend.file_path(bucket, name)
    except ValueError as exc:
        raise Http404 from exc
    if not path.is_file():
        raise Http404
    # ?download=<file name> saves the file under that name instead of showing it.
    download = get_valid_filename(request.GET.get("download", "")) if request.GET.get("download") else ""
    return FileResponse(path.open("rb"), content_type=storage.content_type(name), as_attachment=bool(download),
                        filename=download or None)


# An open page holds one server thread; streams end after this long and the browser reconnects.
EVENT_STREAM_SECONDS = 25


@login_required
@require_GET
def job_events(request):
    """Server-sent events: the requesting user's jobs as they change (`event: job`, the API's JSON)."""
    user = request.user

    def job_data(job_id):
        job = Job.objects.filter(pk=job_id, user=user).select_related("video").first()
        return json.dumps(JobSerializer(job, context={"request": request}).data, default=str) if job else None

    def stream():
        yield "retry: 1000\n\n"
        changes = events.changed_jobs(user.pk, EVENT_STREAM_SECONDS)  # subscribed before the first read
        active = Job.objects.filter(user=user, status__in=["queued", "processing"]).values_list("pk", flat=True)
        for job_id in list(active):
            yield f"event: job\ndata: {job_data(job_id)}\n\n"
        for job_id in changes:
            data = job_data(job_id) if job_id else None
            yield f"event: job\ndata: {data}\n\n" if data else ": still here\n\n"

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let nginx pass events through as they come
    return response
