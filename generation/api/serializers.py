import copy
from datetime import datetime, timedelta

from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import capabilities, job_types, retention, scheduler, storage, webhooks
from ..models import (
    CreditEntry,
    Image,
    Job,
    JobPhase,
    JobStatus,
    ReferenceImage,
    ReferenceType,
    Video,
    WebhookAttempt,
    WebhookDelivery,
    tier_of,
)


class CachedFieldsMixin:
    """Build a serializer's fields once per class: DRF re-inspects a ModelSerializer's model for every
    instance, which was a third of the cost of answering a job submission. Each instance gets shallow copies (binding
    sets only the copy's own attributes); DRF's deep copy re-runs every field's __init__, another sixth."""

    _built_fields = {}

    def get_fields(self):
        cls = type(self)
        if cls not in self._built_fields:
            self._built_fields[cls] = super().get_fields()
        # A nested serializer binds its own fields in turn: those are copied whole.
        return {name: copy.deepcopy(field) if isinstance(field, serializers.BaseSerializer) else copy.copy(field)
                for name, field in self._built_fields[cls].items()}


@extend_schema_field(OpenApiTypes.INT)  # its queryset depends on the user: the schema cannot read the id's type
class UserReferenceField(serializers.PrimaryKeyRelatedField):
    """A ReferenceImage id; another user's id reads as "does not exist"."""

    def get_queryset(self):
        return ReferenceImage.objects.filter(user=self.context["user"])


class TextField(serializers.CharField):
    """A CharField that takes only strings (a form's values are; DRF's turns a JSON number into one, which the
    schema does not allow) and that says in the schema that it refuses NUL, with a pattern where DRF's refuses
    it unsaid."""

    # `+`: an empty value never reaches the validators (allow_blank decides), and so the schema's blank option
    # stays apart from the pattern, as drf-spectacular's oneOf needs.
    NO_NUL = RegexValidator(r"^[^\x00]+$", message=ProhibitNullCharactersValidator.message,
                            code=ProhibitNullCharactersValidator.code)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]
        self.validators.append(self.NO_NUL)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class JobRequestSerializer(CachedFieldsMixin, serializers.Serializer):
    """What a client may ask for when submitting a job. Errors carry codes (`invalid_choice`,
    `single_output`, `unsupported` ...) that the Workspace turns into its own words."""

    job_type = serializers.ChoiceField(choices=list(job_types.JOB_TYPES))
    prompt = TextField(max_length=job_types.PROMPT_MAX_LENGTH, trim_whitespace=True)
    negative_prompt = TextField(max_length=job_types.NEGATIVE_PROMPT_MAX_LENGTH, required=False, allow_blank=True,
                                default="")
    num_images = serializers.ChoiceField(
        choices=job_types.NUM_IMAGES_CHOICES, required=False, default=1,
        error_messages={"invalid_choice": "Must be " + ", ".join(map(str, job_types.NUM_IMAGES_CHOICES[:-1]))
                                          + f" or {job_types.NUM_IMAGES_CHOICES[-1]}."},
        help_text="More than 1: SDXL types only.")
    seed = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0,
                                    max_value=job_types.MAX_SEED)
    aspect_ratio = serializers.ChoiceField(choices=job_types.ASPECT_RATIOS, required=False, allow_blank=True,
                                           default="")
    reference_image = UserReferenceField(required=False, allow_null=True, default=None,
                                         help_text="One of your references (POST /api/references/).")
    reference_type = serializers.ChoiceField(choices=ReferenceType.choices, required=False, allow_blank=True,
                                             default="", help_text="With reference_image; those a job type takes "
                                                                   "now: GET /api/job-types/ (reference_types).")
    reference_strength = serializers.FloatField(required=False, default=job_types.REFERENCE_STRENGTH_DEFAULT,
                                                min_value=job_types.REFERENCE_STRENGTH_MIN,
                                                max_value=job_types.REFERENCE_STRENGTH_MAX)
    webhook = serializers.URLField(
        required=False, allow_blank=True, default="", max_length=Job._meta.get_field("webhook").max_length,
        help_text="An https URL to POST the job to as it changes (signed: Standard Webhooks); it must resolve to "
                  "public addresses.")
    webhook_events_filter = serializers.ListField(
        child=serializers.ChoiceField(choices=webhooks.EVENTS), required=False, allow_empty=False,
        max_length=len(webhooks.EVENTS), default=webhooks.DEFAULT_EVENTS,
        help_text="What the webhook is sent for: start, progress (at most one waiting at a time), output (the "
                  "images or video were written), completed (completed, failed or cancelled).")

    def validate_webhook(self, url):
        if url:
            try:
                webhooks.check_url(url)
            except webhooks.Refused as exc:
                raise serializers.ValidationError(str(exc), code="refused") from exc
        return url

    def validate_webhook_events_filter(self, events):
        return list(dict.fromkeys(events))

    def validate(self, data):
        errors = {}
        jt = job_types.JOB_TYPES[data["job_type"]]
        if data["num_images"] != 1 and not jt.batched:
            errors["num_images"] = [error(f"{jt.name} makes one {jt.kind} per job; only SDXL types make 3 or 6.",
                                          "single_output")]
        if data["reference_image"] and not data["reference_type"]:
            errors["reference_type"] = [error("Required with reference_image: style, composition or character.",
                                              "required")]
        elif data["reference_type"] and not data["reference_image"]:
            errors["reference_image"] = [error("Required with reference_type.", "required")]
        elif data["reference_image"]:
            supported = capabilities.reference_types(jt)
            if data["reference_type"] not in supported:
                errors["reference_type"] = [error(capabilities.why_not(jt, data["reference_type"]), "unsupported")]
        if errors:
            raise serializers.ValidationError(errors)
        return data


def error(message, code):
    return serializers.ErrorDetail(message, code=code)


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that takes only JSON's true and false (DRF's also takes 1, "yes", "on", ... which the schema
    does not allow)."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class AssetSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    job_type = serializers.CharField(source="job.job_type", read_only=True)
    status = serializers.CharField(source="job.status", read_only=True)  # "completed": assets come with it
    title = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    keep = StrictBooleanField(required=False, help_text="Kept: never deleted by retention. The only field a PATCH "
                                                        "changes.")
    expires_at = serializers.SerializerMethodField()

    def get_expires_at(self, asset) -> datetime | None:
        """When retention deletes it (RETENTION_DAYS after it was made); null when it is kept, by its owner or by
        an installation that keeps everything."""
        kept_for = self.context.setdefault("retention_days", {})  # per owner, read once per answer
        if asset.user_id not in kept_for:
            kept_for[asset.user_id] = retention.days(tier_of(asset.user))
        expires = retention.expires_at(asset, kept_for[asset.user_id])
        return serializers.DateTimeField().to_representation(expires) if expires else None

    def get_title(self, asset) -> str:
        return asset.prompt[:80]

    def get_url(self, asset) -> str:
        return storage.signed_url(asset.bucket, asset.path, self.context.get("request"))

    def get_thumbnail_url(self, asset) -> str | None:
        if not asset.thumbnail_path:
            return None
        return storage.signed_url(asset.bucket, asset.thumbnail_path, self.context.get("request"))


class ImageSerializer(AssetSerializer):
    class Meta:
        model = Image
        fields = ["id", "job", "job_type", "image_index", "prompt", "title", "seed", "status", "quality",
                  "format", "width", "height", "size_bytes", "url", "thumbnail_url", "metadata", "created_at",
                  "keep", "expires_at"]
        read_only_fields = [name for name in fields if name != "keep"]


class VideoSerializer(AssetSerializer):
    signed_url_expires_at = serializers.SerializerMethodField()

    class Meta:
        model = Video
        fields = ["id", "job", "job_type", "prompt", "title", "status", "quality", "format", "width", "height",
                  "duration", "fps", "frame_count", "size_bytes", "url", "signed_url_expires_at", "thumbnail_url",
                  "metadata", "created_at", "keep", "expires_at"]
        read_only_fields = [name for name in fields if name != "keep"]

    def get_signed_url_expires_at(self, video) -> datetime:
        """When `url`, signed now, stops working."""
        return serializers.DateTimeField().to_representation(
            timezone.now() + timedelta(seconds=settings.SIGNED_URL_TTL))


class AttemptSerializer(serializers.Serializer):
    """One start of a job by a worker (generation.metadata.Attempt)."""

    worker = serializers.CharField(help_text='The worker\'s node name, e.g. "sdxl-gpu1@gpu-host-2".')
    host = serializers.CharField(help_text="The host name of the worker's machine.")
    started_at = serializers.DateTimeField(help_text="When it started, by the database's clock.")


def is_staff(context):
    """Whether a serializer's `context` is a staff member's request."""
    user = getattr(context.get("request"), "user", None) or context.get("user")
    return bool(user and user.is_staff)


class JobSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    queue_position = serializers.SerializerMethodField()
    estimated_start_seconds = serializers.SerializerMethodField()
    estimated_finish_seconds = serializers.SerializerMethodField()
    waiting_reason = serializers.SerializerMethodField()
    expected_generation_seconds = serializers.FloatField(source="expected_seconds", read_only=True)
    duration = serializers.FloatField(read_only=True, allow_null=True)
    # Declared: DRF drops allow_blank from the read-only fields it builds, and "" (no reference) is a value.
    reference_type = serializers.ChoiceField(choices=ReferenceType.choices, allow_blank=True, read_only=True)
    phase = serializers.ChoiceField(choices=JobPhase.choices, allow_blank=True, read_only=True,
                                    help_text="What the worker does now, while processing; empty otherwise.")
    step_seconds = serializers.FloatField(read_only=True, allow_null=True,
                                          help_text="The worker's seconds per denoising step so far.")
    webhook_events_filter = serializers.ListField(child=serializers.ChoiceField(choices=webhooks.EVENTS),
                                                  read_only=True)
    images = serializers.SerializerMethodField()
    video = serializers.SerializerMethodField()
    attempts = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id", "job_type", "status", "queue", "queue_position", "estimated_start_seconds",
            "estimated_finish_seconds", "waiting_reason", "format", "quality", "model_type",
            "prompt", "enhanced_prompt", "negative_prompt", "seed", "num_images", "aspect_ratio", "width",
            "height", "steps", "guidance", "frames", "reference_image", "reference_type",
            "reference_strength", "expected_generation_seconds", "credits", "progress", "phase", "current_step",
            "total_steps", "step_seconds", "error_message", "metadata", "retry_of", "created_at", "started_at",
            "completed_at", "duration", "images", "video", "webhook", "webhook_events_filter", "cleared", "attempts",
        ]
        read_only_fields = fields  # a representation only: JobRequestSerializer is what clients send

    def to_representation(self, job):
        data = super().to_representation(job)
        if "attempts" in data["metadata"] and not is_staff(self.context):
            data["metadata"] = {key: value for key, value in data["metadata"].items() if key != "attempts"}
        return data

    @extend_schema_field(AttemptSerializer(many=True))
    def get_attempts(self, job):
        """Staff only (empty for others, like the workers of /api/queues/): each start of the job by a worker,
        oldest first; the last one ran or runs it."""
        if not is_staff(self.context):
            return []
        return AttemptSerializer(job.metadata.get("attempts", []), many=True).data

    def outlook(self, job):
        """The scheduler's Outlook of a queued or running job (one PoolView per pool and request)."""
        known = self.context.setdefault("outlooks", {})
        if job.pk not in known:
            known.update(scheduler.outlooks([job], self.context.setdefault("pool_views", {})))
        return known.get(job.pk, scheduler.Outlook())

    def get_queue_position(self, job) -> int | None:
        """1: the next job of its pool to start; the place the scheduler's fair order gives it."""
        return self.outlook(job).position

    def get_estimated_start_seconds(self, job) -> float | None:
        """Seconds until it starts (0 once running), from this installation's measured durations."""
        return self.outlook(job).start_seconds

    def get_estimated_finish_seconds(self, job) -> float | None:
        return self.outlook(job).finish_seconds

    def get_waiting_reason(self, job) -> str | None:
        """Why a queued job cannot start now (no worker online, or none that can serve it)."""
        return self.outlook(job).waiting_reason

    @extend_schema_field(ImageSerializer(many=True))
    def get_images(self, job):
        if job.format != "png" or job.status != JobStatus.COMPLETED:
            return []  # assets are written when the job completes
        images = sorted(job.images.all(), key=lambda image: image.image_index)  # uses a prefetch if any
        return ImageSerializer(images, many=True, context=self.context).data

    @extend_schema_field(VideoSerializer(allow_null=True))
    def get_video(self, job):
        if job.format != "mp4" or job.status != JobStatus.COMPLETED:
            return None
        video = getattr(job, "video", None)  # None when the reverse one-to-one row does not exist
        return VideoSerializer(video, context=self.context).data if video else None


class CancelWaitingSerializer(serializers.Serializer):
    """What POST /api/jobs/cancel-waiting/ did with your queued jobs."""

    cancelled = serializers.ListField(child=serializers.UUIDField(), help_text="The jobs cancelled (and refunded).")
    skipped = serializers.ListField(child=serializers.UUIDField(), help_text=(
        "Jobs that started or ended before they could be cancelled: left as they are."))


class ClearFinishedSerializer(serializers.Serializer):
    cleared = serializers.IntegerField(help_text="How many finished jobs were taken off the Workspace.")


class JobTypeSerializer(serializers.Serializer):
    """One row of the job-type table as GET /api/job-types/ serves it (generation.capabilities.job_type_rows)."""

    name = serializers.CharField()
    label = serializers.CharField(help_text='The name people see, e.g. "SDXL image · fast".')
    pool = serializers.CharField()
    queue = serializers.CharField()
    kind = serializers.CharField(help_text="image or video")
    format = serializers.CharField()
    quality = serializers.CharField()
    model_type = serializers.CharField()
    enhanced = serializers.BooleanField()
    steps = serializers.IntegerField()
    guidance = serializers.FloatField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    frames = serializers.IntegerField()
    expected_seconds = serializers.FloatField(help_text="Per image for SDXL, per job otherwise.")
    credits = serializers.IntegerField()
    bucket = serializers.CharField()
    num_images = serializers.ListField(child=serializers.IntegerField())
    aspect_ratios = serializers.DictField(child=serializers.ListField(child=serializers.IntegerField()),
                                          help_text="Each ratio's [width, height].")
    render = serializers.DictField(help_text="Size, steps, guidance and frames in this server's profile.")
    reference_types = serializers.ListField(child=serializers.CharField(), help_text="Accepted now.")


class QueueSerializer(serializers.Serializer):
    """One pool's queue as GET /api/queues/ shows it (generation.queues.queue_stats); documents the schema."""

    queue = serializers.CharField()
    pool = serializers.CharField()
    length = serializers.IntegerField(help_text="Messages in the broker's queue.")
    queued_jobs = serializers.IntegerField(help_text="Jobs waiting or released, not started.")
    processing_jobs = serializers.IntegerField()
    waiting_jobs = serializers.IntegerField(help_text="Queued jobs the scheduler has not released yet.")
    released_jobs = serializers.IntegerField(help_text="Released to the broker, not started.")
    running_jobs = serializers.IntegerField()
    heaviest_users = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="Staff only: up to 5 users with the most jobs waiting or in flight ({user, waiting, in_flight}).")
    oldest_waiting_seconds = serializers.FloatField(allow_null=True)
    workers_online = serializers.IntegerField()
    workers_ready = serializers.IntegerField(help_text="Workers online that have loaded their models.")
    workers = serializers.ListField(
        child=serializers.DictField(), required=False,
        help_text="Staff only: the workers online, with their host names, pids and the models they loaded, the jobs "
                  "each completed and failed in the last hour and the one it runs now (running_job).")
    average_wait_seconds = serializers.FloatField(allow_null=True)
    jobs_per_hour = serializers.FloatField()
    error_rate = serializers.FloatField()


class ReferenceImageSerializer(serializers.ModelSerializer):
    file = serializers.FileField(write_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = ReferenceImage
        fields = ["id", "file", "original_name", "content_type", "width", "height", "size_bytes", "url",
                  "created_at"]
        read_only_fields = ["original_name", "content_type", "width", "height", "size_bytes", "created_at"]

    def get_url(self, ref) -> str:
        return storage.signed_url(ReferenceImage.BUCKET, ref.path, self.context.get("request"))


class QuoteSerializer(serializers.Serializer):
    """What a submission would cost and when it would start (POST /api/jobs/quote/ creates nothing)."""

    job_type = serializers.CharField()
    price = serializers.IntegerField(help_text="The job's credits.")
    charged = serializers.BooleanField(help_text="False for staff, unlimited users, or with credits off.")
    balance = serializers.IntegerField()
    expected_generation_seconds = serializers.FloatField()
    queue_position = serializers.IntegerField(allow_null=True)
    estimated_start_seconds = serializers.FloatField(allow_null=True)
    estimated_finish_seconds = serializers.FloatField(allow_null=True)
    waiting_reason = serializers.CharField(allow_null=True)
    refused = serializers.CharField(help_text="Why a submission would be refused now (402 or 429), or empty.")


class UsageSerializer(serializers.Serializer):
    job_type = serializers.CharField()
    jobs = serializers.IntegerField()
    credits = serializers.IntegerField(help_text="Charged, net of refunds.")
    gpu_seconds = serializers.FloatField(help_text="Seconds of accelerator (or CPU) time spent rendering.")


class LimitsSerializer(serializers.Serializer):
    active_jobs = serializers.IntegerField(help_text="Jobs waiting or running at once.")
    submissions_per_minute = serializers.IntegerField()
    references_per_day = serializers.IntegerField()
    reference_bytes = serializers.IntegerField(help_text="Bytes of reference images kept.")


class AccountSerializer(serializers.Serializer):
    """GET /api/account/: the balance, tier, limits and usage of the user asking."""

    username = serializers.CharField()
    credits = serializers.IntegerField(help_text="The balance.")
    charged = serializers.BooleanField(help_text="Whether submissions cost credits (no: staff, unlimited, off).")
    tier = serializers.CharField()
    limits = LimitsSerializer()
    usage = UsageSerializer(many=True)


class CreditEntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditEntry
        fields = ["id", "created_at", "kind", "amount", "balance", "price", "reason", "job", "job_type"]


class InsufficientCreditsSerializer(serializers.Serializer):
    """402: the job costs more credits than the user has; nothing was created."""

    detail = serializers.CharField()
    code = serializers.CharField(help_text="insufficient_credits")
    balance = serializers.IntegerField()
    price = serializers.IntegerField()


class ErrorSerializer(serializers.Serializer):
    """An error that is not about the request's fields: DRF's {"detail"}, a "code" too with X-Error-Codes: 1."""

    detail = serializers.CharField()
    code = serializers.CharField(required=False, help_text="With X-Error-Codes: 1, or always where named here.")


class NegativePromptRequestSerializer(serializers.Serializer):
    """What GET (query) or POST (JSON body) /api/negative-prompt/ takes: the fields of a job that shape it."""

    job_type = serializers.ChoiceField(choices=list(job_types.JOB_TYPES), default="sdxl_image_fast")
    prompt = TextField(allow_blank=True, trim_whitespace=False, default="")
    negative_prompt = TextField(allow_blank=True, trim_whitespace=False, default="")


class NegativePromptSerializer(serializers.Serializer):
    negative_prompt = serializers.CharField(source="text", help_text="Exactly what submission would use.")
    multi_party = serializers.ListField(child=serializers.CharField(),
                                        help_text="Why the group terms were added (none: they were not).")
    dropped = serializers.ListField(child=serializers.CharField(),
                                    help_text="Terms left out to fit the model's token window.")


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "seconds", "status_code", "error", "response_excerpt"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One webhook message about a job (GET /api/jobs/{id}/webhooks/) and every attempt to send it."""

    webhook_id = serializers.CharField(read_only=True, help_text="The webhook-id header, the same on every attempt.")
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = ["webhook_id", "event", "url", "status", "created_at", "next_attempt_at", "retry_until",
                  "finished_at", "attempts"]


class WebhookSecretSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="whsec_…: verify deliveries with it (Standard Webhooks).")


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text='Send it as the header "Authorization: Token <token>".')


class QuotaExceededSerializer(serializers.Serializer):
    """429: a limit reached (the Retry-After header says when to try again); nothing was created."""

    detail = serializers.CharField()
    code = serializers.CharField(help_text="active_jobs, submissions_per_minute, references_per_day or "
                                           "reference_bytes")
    retry_after = serializers.IntegerField(help_text="Seconds, as in the Retry-After header.")
