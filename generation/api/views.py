"""The JSON API (DRF). Thin: the serializers validate, plain functions of the domain act."""

import tempfile

from django.contrib.auth.signals import user_logged_in
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from ourvidz.lockout import locked_out

from .. import (
    capabilities,
    credits,
    downloads,
    job_types,
    negative_prompts,
    queues,
    quotas,
    references,
    submission,
    webhooks,
)
from ..models import CreditEntry, Image, Job, ReferenceImage, Video
from . import filters, throttles
from .schema import VALIDATION_ERROR
from .serializers import (
    AccountSerializer,
    CancelWaitingSerializer,
    ClearFinishedSerializer,
    CreditEntrySerializer,
    ErrorSerializer,
    ImageSerializer,
    InsufficientCreditsSerializer,
    JobRequestSerializer,
    JobSerializer,
    JobTypeSerializer,
    NegativePromptRequestSerializer,
    NegativePromptSerializer,
    QueueSerializer,
    QuotaExceededSerializer,
    QuoteSerializer,
    ReferenceImageSerializer,
    TokenSerializer,
    VideoSerializer,
    WebhookDeliverySerializer,
    WebhookSecretSerializer,
)

IDEMPOTENCY_KEY = "Idempotency-Key"
# The header validated like a field: Job.idempotency_key's length, no NUL (PostgreSQL refuses it), kept as sent.
IDEMPOTENCY_KEY_FIELD = serializers.CharField(max_length=Job._meta.get_field("idempotency_key").max_length,
                                              allow_blank=True, trim_whitespace=False)


def owned(view, model):
    """The requesting user's `model` objects (another user's are a 404). None while drf-spectacular reads the view
    for the schema, without a user: an empty queryset still tells it the ids' type and the filters."""
    if getattr(view, "swagger_fake_view", False):
        return model.objects.none()
    return model.objects.filter(user=view.request.user)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer
    filterset_class = filters.JobFilter

    def get_serializer_class(self):
        # The request fields for POST: the browsable API renders its submission form from them.
        if self.request.method == "POST" and self.action in ("create", "list"):
            return JobRequestSerializer
        return JobSerializer

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "user": self.request.user}

    def get_throttles(self):
        return [throttles.SubmissionThrottle()] if self.action == "create" else []

    def throttled(self, request, wait):
        limit = quotas.limit("submissions_per_minute", request.user)
        raise quotas.QuotaExceeded("submissions_per_minute", f"You submitted {limit} jobs in the last minute, "
                                                             "the most allowed; try again in a moment.", wait or 1)

    def get_queryset(self):
        return owned(self, Job).select_related("video").prefetch_related("images")

    # JSON only in the schema: a form cannot send the null of `seed` or `reference_image` (the browsable API's
    # form still posts one).
    @extend_schema(request={"application/json": JobRequestSerializer},
                   responses={201: JobSerializer,
                              200: OpenApiResponse(JobSerializer, description="The job first submitted with this "
                                                   "Idempotency-Key and the same body."),
                              402: InsufficientCreditsSerializer,
                              409: OpenApiResponse(ErrorSerializer, description="This Idempotency-Key was used with "
                                                   "another body (code idempotency_key_reused); nothing was created."),
                              429: QuotaExceededSerializer,
                              503: OpenApiResponse(ErrorSerializer, description="This server cannot prepare the job "
                                                   "now (code sdxl_tokenizer_unavailable: it cannot read the SDXL "
                                                   "tokenizer; see /healthz); nothing was created.")},
                   parameters=[OpenApiParameter(IDEMPOTENCY_KEY, location=OpenApiParameter.HEADER, type={
                       "type": "string", "maxLength": IDEMPOTENCY_KEY_FIELD.max_length})])
    def create(self, request):
        """Queue a generation job. The same Idempotency-Key with the same body returns the first job instead of a
        second; with another body it is a 409."""
        key = idempotency_key(request)
        digest = submission.fingerprint(request.data)
        if first := submission.existing(request.user, key, digest):
            return Response(JobSerializer(first, context=self.get_serializer_context()).data)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job, created = submission.submit(request.user, serializer.validated_data, key, digest)
        return Response(JobSerializer(job, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request={"application/json": JobRequestSerializer}, responses=QuoteSerializer)
    @action(detail=False, methods=["post"])
    def quote(self, request):
        """What submitting this body would cost (credits), how long it would run and when it would start,
        and why it would be refused now, if it would; creates nothing."""
        serializer = JobRequestSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return Response(QuoteSerializer(submission.quote(request.user, serializer.validated_data)).data)

    @extend_schema(request=None, responses={200: JobSerializer, 409: OpenApiResponse(
        ErrorSerializer, description="The job already ended (completed, failed or cancelled).")})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued job (it never runs) or a running one (it stops at its next step)."""
        job = self.get_object()
        if not submission.cancel(job):
            return Response({"detail": f"The job is already {job.status}."}, status=status.HTTP_409_CONFLICT)
        job.refresh_from_db()
        return Response(JobSerializer(job, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=CancelWaitingSerializer)
    @action(detail=False, methods=["post"], url_path="cancel-waiting", filter_backends=[], pagination_class=None)
    def cancel_waiting(self, request):
        """Cancel all your queued jobs, each refunded as a single cancel is; running ones go on. A job that
        starts meanwhile is left alone and listed in `skipped`."""
        cancelled, skipped = submission.cancel_waiting(request.user)
        return Response(CancelWaitingSerializer({"cancelled": [job.pk for job in cancelled],
                                                 "skipped": [job.pk for job in skipped]}).data)

    @extend_schema(request=None, responses={200: JobSerializer, 409: OpenApiResponse(
        ErrorSerializer, description="The job has not finished (it is queued or processing).")})
    @action(detail=True, methods=["post"])
    def clear(self, request, pk=None):
        """Take a finished job off the Workspace (`cleared`); the Library and this API still list it."""
        job = self.get_object()
        if not submission.clear(job):
            return Response({"detail": f"The job is still {job.status}; only a finished job can be cleared."},
                            status=status.HTTP_409_CONFLICT)
        job.refresh_from_db()
        return Response(JobSerializer(job, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses=ClearFinishedSerializer)
    @action(detail=False, methods=["post"], url_path="clear-finished", filter_backends=[], pagination_class=None)
    def clear_finished(self, request):
        """Take all your finished jobs off the Workspace; the Library and this API still list them."""
        return Response(ClearFinishedSerializer({"cleared": submission.clear_finished(request.user)}).data)

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)  # the job's own: no list filters
    def webhooks(self, request, pk=None):
        """The job's webhook deliveries, newest first, each with every attempt to send it (status code, time,
        error, the start of the answer)."""
        deliveries = self.get_object().webhook_deliveries.prefetch_related("attempts")
        return Response(WebhookDeliverySerializer(deliveries, many=True).data)

    @extend_schema(responses={
        (200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description=(
            "A zip of the job's images (or its video) under the names the Library saves them with, and "
            "parameters.txt: each file's name, then its generation parameters as the PNGs carry them.")),
        409: OpenApiResponse(ErrorSerializer, description="The job has not completed: it has no files.")})
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def download(self, request, pk=None):
        """All of a completed job's files and their parameters in one zip."""
        job = self.get_object()
        archive = tempfile.TemporaryFile()  # on disk, not in memory: a video can be large
        try:
            downloads.write_job_zip(job, archive)
        except downloads.NotFinished as exc:
            archive.close()
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        archive.seek(0)
        return FileResponse(archive, as_attachment=True, filename=downloads.zip_name(job),
                            content_type="application/zip")


class AssetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                   mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Images or videos of the requesting user, filterable by job_type and status. A PATCH sets `keep` (kept ones
    are never deleted by retention); deleting one deletes its files too (generation.receivers.delete_files)."""

    model = None
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]  # no PUT: only `keep` changes

    def get_queryset(self):
        return owned(self, self.model).select_related("job")


class ImageViewSet(AssetViewSet):
    model = Image
    serializer_class = ImageSerializer
    filterset_class = filters.ImageFilter

    @extend_schema(request=None, responses={201: ReferenceImageSerializer, 400: VALIDATION_ERROR,
                                            429: QuotaExceededSerializer})
    @action(detail=True, methods=["post"])
    def reference(self, request, pk=None):
        """Keep a copy of this image as a reference image for later jobs (the same image gives the same one)."""
        try:
            ref = references.reference_from_image(self.get_object())
        except references.InvalidReference as exc:
            raise ValidationError({"image": [str(exc)]}, code=exc.code) from exc
        return Response(ReferenceImageSerializer(ref, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)


class VideoViewSet(AssetViewSet):
    model = Video
    serializer_class = VideoSerializer
    filterset_class = filters.VideoFilter


class ReferenceImageViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                            mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = ReferenceImageSerializer
    parser_classes = [MultiPartParser]  # an upload is a file: the schema says so, and other bodies are a 415

    def get_queryset(self):
        return owned(self, ReferenceImage)

    @extend_schema(responses={201: ReferenceImageSerializer, 429: QuotaExceededSerializer})
    def create(self, request):
        """Upload a reference image (PNG, JPEG or WebP, size-limited) as multipart field `file`."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            ref = references.save_reference(request.user, serializer.validated_data["file"])
        except references.InvalidReference as exc:
            raise ValidationError({"file": [str(exc)]}, code=exc.code) from exc
        return Response(self.get_serializer(ref).data, status=status.HTTP_201_CREATED)


class JobTypesView(APIView):
    @extend_schema(responses=JobTypeSerializer(many=True))
    def get(self, request):
        """The ten job types with their parameters and the reference types accepted now."""
        return Response(capabilities.job_type_rows())


class NegativePromptView(APIView):
    @extend_schema(parameters=[NegativePromptRequestSerializer], responses=NegativePromptSerializer)
    def get(self, request):
        """The negative prompt a job would get (`job_type`, `prompt`, `negative_prompt`), built exactly as
        submission builds it. POST takes the same fields as a JSON body, for long prompts."""
        # A plain dict: DRF reads an empty value of a form (a QueryDict) as no value, and `job_type=` is not one.
        return Response(negative_prompt_preview(request.query_params.dict()))

    @extend_schema(request={"application/json": NegativePromptRequestSerializer}, responses=NegativePromptSerializer)
    def post(self, request):
        return Response(negative_prompt_preview(request.data))


def negative_prompt_preview(params):
    serializer = NegativePromptRequestSerializer(data=params)
    serializer.is_valid(raise_exception=True)
    fields = serializer.validated_data
    built = negative_prompts.for_job(job_types.JOB_TYPES[fields["job_type"]], fields["prompt"],
                                     fields["negative_prompt"])
    return NegativePromptSerializer(built).data


class QueuesView(APIView):
    STAFF_ONLY = ["heaviest_users", "workers"]  # other users' names; the workers' hosts, pids and model paths

    @extend_schema(responses=QueueSerializer(many=True))
    def get(self, request):
        """Per queue: length, jobs waiting, released and running, workers online, average wait, jobs per
        hour and error rate (last hour); for staff also the heaviest users and the workers themselves."""
        stats = queues.queue_stats()
        if not request.user.is_staff:
            for queue in stats:
                for field in self.STAFF_ONLY:
                    queue.pop(field)
        return Response(QueueSerializer(stats, many=True).data)


class AccountView(APIView):
    @extend_schema(responses=AccountSerializer)
    def get(self, request):
        """Your credits balance, whether you are charged, your tier, your limits and your usage per job type
        (jobs, credits, GPU seconds)."""
        return Response(AccountSerializer(credits.summary(request.user)).data)


class WebhookSecretView(APIView):
    @extend_schema(responses=WebhookSecretSerializer)
    def get(self, request):
        """The secret your webhook deliveries are signed with (Standard Webhooks: verify them with it)."""
        return Response(WebhookSecretSerializer({"secret": webhooks.secret(request.user)}).data)

    @extend_schema(request=None, responses=WebhookSecretSerializer)
    def post(self, request):
        """Replace your webhook secret with a new one: every attempt from now on is signed with it."""
        return Response(WebhookSecretSerializer({"secret": webhooks.rotate_secret(request.user)}).data)


class LedgerView(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Your credits ledger, newest first: grants, charges and refunds, each with its reason and job."""

    serializer_class = CreditEntrySerializer

    def get_queryset(self):
        return owned(self, CreditEntry)


class NotFoundView(APIView):
    """Any other path under /api/ (an id with a dot or a slash in it too): the API's JSON 404, not the site's
    page."""

    permission_classes = [AllowAny]
    schema = None  # not an operation

    def not_found(self, request, *args, **kwargs):
        raise NotFound()

    get = post = put = patch = delete = not_found


class TokenView(ObtainAuthToken):
    """An API token for a username and password. Wrong passwords for an account, or from an address, slow it
    down and then lock it for a while (django-axes, ourvidz.lockout): 429 with Retry-After, whatever the password."""

    permission_classes = [AllowAny]  # as DRF's (none), and the schema says that no login is needed

    @extend_schema(request=AuthTokenSerializer, responses={
        200: TokenSerializer,
        400: OpenApiResponse(VALIDATION_ERROR.response, description="A blank field, or no such username and "
                             "password (`non_field_errors`)."),
        429: OpenApiResponse(ErrorSerializer, description="Too many wrong passwords (code locked_out)."),
    })
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except ValidationError:
            # django-axes marks the request it refused; authenticate() then answers "no such user".
            if getattr(request, "axes_locked_out", False):
                return locked_out(request)
            raise
        user = serializer.validated_data["user"]
        # A password login like the pages': it starts the wrong-password count over and sets last_login.
        user_logged_in.send(sender=type(user), request=request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


def idempotency_key(request):
    """The request's Idempotency-Key header (None when absent or empty); a 400 naming it when it is too long for
    the column or holds a NUL."""
    value = request.headers.get(IDEMPOTENCY_KEY)
    if value is None:
        return None
    try:
        return IDEMPOTENCY_KEY_FIELD.run_validation(value) or None
    except ValidationError as exc:
        raise ValidationError({IDEMPOTENCY_KEY: exc.detail}) from exc
