import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from . import job_types


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Status only moves forward: these are the moves allowed from each status.
TRANSITIONS = {
    JobStatus.QUEUED: {JobStatus.PROCESSING, JobStatus.FAILED, JobStatus.CANCELLED},
    # processing -> processing: a task redelivered after its worker's pool process died runs the job again;
    # processing -> queued: the whole worker vanished, the job goes back to the scheduler.
    JobStatus.PROCESSING: {JobStatus.PROCESSING, JobStatus.QUEUED, JobStatus.COMPLETED, JobStatus.FAILED,
                           JobStatus.CANCELLED},
    JobStatus.COMPLETED: set(),
    JobStatus.FAILED: set(),
    JobStatus.CANCELLED: set(),
}
FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobPhase(models.TextChoices):
    """What a running job's worker is doing now, in the order a job goes through them."""

    LOADING = "loading"  # the model, or the reference image
    ENHANCING = "enhancing"  # the LLM rewrites the prompt
    STEPS = "steps"  # denoising: current_step of total_steps
    DECODING = "decoding"  # latents to pixels
    ENCODING = "encoding"  # PNG or MP4
    SAVING = "saving"  # files to storage, rows to the database

JOB_TYPE_CHOICES = [(name, name) for name in job_types.JOB_TYPES]


class Tier(models.IntegerChoices):
    """A user's place in the scheduler's fair order (generation.scheduler): higher tiers start first."""

    STANDARD = 0, "standard"
    PRIORITY = 1, "priority"  # staff count as priority too


class Account(models.Model):
    """What the service keeps about a user beyond Django's User: the scheduling tier an admin sets, and the
    credits balance (generation.credits; every change is a CreditEntry)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account")
    tier = models.PositiveSmallIntegerField(
        choices=Tier.choices, default=Tier.STANDARD,
        help_text="Priority users' jobs start before standard ones; staff count as priority.")
    credits = models.IntegerField(default=0, editable=False, help_text="Changed by grants, charges and refunds.")
    unlimited = models.BooleanField(
        default=False, help_text="Never charged (the ledger still records usage); staff never are either.")
    # Signs the user's webhook deliveries (generation.webhooks.secret): made on first use, rotated by the user.
    webhook_secret = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        constraints = [
            # Concurrent charges take the balance with a conditional UPDATE; this is the last line.
            models.CheckConstraint(condition=models.Q(credits__gte=0), name="credits_never_negative"),
        ]

    def __str__(self):
        return f"{self.user} ({self.get_tier_display()})"


class CreditKind(models.TextChoices):
    GRANT = "grant"  # an admin's grant (or take-back), or the sign-up credits
    CHARGE = "charge"  # a submission: the job's credits (0 for staff, unlimited users or OURVIDZ_CREDITS=0)
    REFUND = "refund"  # a job that failed for a reason not the user's, or was cancelled before it started


class CreditEntry(models.Model):
    """One change to a user's credits, append-only: what, how much, the balance after it, why, which job."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credit_entries")
    kind = models.CharField(max_length=8, choices=CreditKind.choices)
    amount = models.IntegerField(help_text="The change to the balance: negative for a charge.")
    price = models.PositiveIntegerField(default=0, help_text="The job's credits, charged or not.")
    balance = models.IntegerField(help_text="The balance after this entry.")
    reason = models.CharField(max_length=255)
    job = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="credit_entries")
    job_type = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "credit entries"
        constraints = [
            models.UniqueConstraint(fields=["job"], condition=models.Q(kind="refund"), name="one_refund_per_job"),
        ]
        indexes = [models.Index(fields=["user", "-created_at"], name="credit_user_created")]

    def __str__(self):
        return f"{self.kind} {self.amount:+d} for {self.user} ({self.reason})"

    @property
    def job_label(self):
        """The job type's name for people (the ledger page)."""
        return job_types.label(self.job_type)


def tier_of(user):
    """The tier `user`'s jobs are scheduled at: staff are priority, others what their Account says."""
    if user.is_staff:
        return Tier.PRIORITY
    account = Account.objects.filter(user=user).only("tier").first()
    return account.tier if account else Tier.STANDARD


class ReferenceType(models.TextChoices):
    STYLE = "style"
    COMPOSITION = "composition"
    CHARACTER = "character"


class ReferenceImage(models.Model):
    """An image a user uploaded for jobs to condition on; stored in the `references` bucket."""

    BUCKET = "references"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="reference_images")
    path = models.CharField(max_length=255)
    content_type = models.CharField(max_length=50)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    original_name = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.original_name or self.path} ({self.width}×{self.height})"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    job_type = models.CharField(max_length=40, choices=JOB_TYPE_CHOICES)
    format = models.CharField(max_length=8)
    quality = models.CharField(max_length=8)
    model_type = models.CharField(max_length=20)
    queue = models.CharField(max_length=40)
    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)

    prompt = models.TextField()
    enhanced_prompt = models.TextField(blank=True)
    negative_prompt = models.TextField(blank=True)
    seed = models.BigIntegerField()
    num_images = models.PositiveSmallIntegerField(default=1)
    aspect_ratio = models.CharField(max_length=8, blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance = models.FloatField()
    frames = models.PositiveIntegerField(default=0)
    reference_image = models.ForeignKey(ReferenceImage, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="jobs")
    reference_type = models.CharField(max_length=12, choices=ReferenceType.choices, blank=True)
    reference_strength = models.FloatField(null=True, blank=True)

    expected_seconds = models.FloatField()
    credits = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)  # 0..1
    current_step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    # While processing: the worker's phase, and its seconds per denoising step so far (its own clock's
    # intervals, so a host's clock error does not matter), from which the remaining time is estimated.
    phase = models.CharField(max_length=10, choices=JobPhase.choices, blank=True)
    step_seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Seconds the worker's accelerator (or CPU) spent rendering it: the cost basis behind the credits.
    gpu_seconds = models.FloatField(null=True, blank=True)
    # The scheduler's bookkeeping (generation.scheduler). A queued job waits in the database until it is
    # released to its pool's broker queue; `releases` numbers the messages sent, so a message from an
    # earlier release that turns up late starts nothing.
    tier = models.PositiveSmallIntegerField(choices=Tier.choices, default=Tier.STANDARD)
    released_at = models.DateTimeField(null=True, blank=True)
    releases = models.PositiveIntegerField(default=0)
    # The worker running it ("<node>/<main process pid>"), so that a vanished worker's job is found.
    worker = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)  # generation.metadata.JobMetadata
    error_message = models.TextField(blank=True)

    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # A digest of the body submitted with the key (generation.submission.fingerprint): the same key with
    # another body is refused, not answered with this job. Empty for jobs from before it was kept.
    request_digest = models.CharField(max_length=64, blank=True)
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="retries")
    # Where to POST the job when it changes (generation.webhooks), and for which events (WebhookEvent values).
    webhook = models.CharField(max_length=1000, blank=True)
    webhook_events_filter = models.JSONField(default=list, blank=True)
    cleared = models.BooleanField(default=False, help_text=(
        "Taken off the Workspace by its owner once finished; the Library and the API still list it."))

    # The database's clock, as every other job time (generation.clock): a web host's clock may be off.
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["user", "idempotency_key"], name="unique_idempotency_key"),
        ]
        indexes = [
            # The scheduler reads a pool's queued and running jobs (partial indexes keep that small however
            # many jobs have finished), the few released to the broker, and when it last served a user.
            models.Index(fields=["queue", "created_at"], condition=models.Q(status="queued"), name="job_queued"),
            models.Index(fields=["queue", "user", "created_at"], name="job_active",
                         condition=models.Q(status__in=["queued", "processing"])),
            models.Index(fields=["queue", "released_at"], name="job_in_broker",
                         condition=models.Q(status="queued", released_at__isnull=False)),
            models.Index(fields=["queue", "user", "released_at"], name="job_served"),
            models.Index(fields=["user", "-created_at"], name="job_user_created"),
        ]

    def __str__(self):
        return f"{self.job_type} {self.id}"

    @property
    def type(self):
        return job_types.get(self.job_type)

    @property
    def is_finished(self):
        return self.status in FINISHED

    @property
    def duration(self):
        """Seconds from start to finish, or None while either is missing."""
        if self.started_at and self.completed_at:
            return (self.completed_at - self.started_at).total_seconds()
        return None

    @classmethod
    def move(cls, job_id, to, only_if=None, **fields):
        """Atomically move a job to status `to` if its status allows it (and its columns match `only_if`);
        True when it moved."""
        allowed_from = [s for s, targets in TRANSITIONS.items() if to in targets]
        if to in FINISHED:
            fields.setdefault("completed_at", Now())  # the database's clock: hosts' clocks differ
        if to != JobStatus.PROCESSING:
            fields.setdefault("phase", "")  # a phase is what a running job's worker does
        jobs = cls.objects.filter(pk=job_id, status__in=allowed_from, **(only_if or {}))
        return bool(jobs.update(status=to, **fields))


class Asset(models.Model):
    """Columns shared by images and videos: one stored file plus its thumbnail."""

    prompt = models.TextField()
    bucket = models.CharField(max_length=63)
    thumbnail_path = models.CharField(max_length=255, blank=True)
    quality = models.CharField(max_length=8)
    format = models.CharField(max_length=8)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField(default=0)
    keep = models.BooleanField(default=False, help_text="Kept by its owner: never deleted by retention.")
    metadata = models.JSONField(default=dict, blank=True)  # generation.metadata.AssetMetadata
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def __str__(self):
        return self.path

    @property
    def job_type(self):
        return self.job.job_type


class Image(Asset):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    image_index = models.PositiveSmallIntegerField(default=0)
    image_path = models.CharField(max_length=255)
    seed = models.BigIntegerField(null=True)

    class Meta(Asset.Meta):
        constraints = [models.UniqueConstraint(fields=["job", "image_index"], name="unique_image_per_index")]
        # The Library pages through a user's assets newest first (generation/web/library.py).
        indexes = [models.Index(fields=["user", "-created_at", "-id"], name="image_user_created")]

    @property
    def path(self):
        return self.image_path


class Video(Asset):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="videos")
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="video")
    video_path = models.CharField(max_length=255)
    duration = models.FloatField(default=0.0)
    fps = models.PositiveSmallIntegerField(default=0)
    frame_count = models.PositiveIntegerField(default=0)

    class Meta(Asset.Meta):
        indexes = [models.Index(fields=["user", "-created_at", "-id"], name="video_user_created")]

    @property
    def path(self):
        return self.video_path


class NegativeTerm(models.Model):
    """One term of the generated SDXL negative prompt, edited by admins."""

    class Trigger(models.TextChoices):
        ALWAYS = "always", "Always included"
        MULTI_PARTY = "multi_party", "Prompt shows several people"

    term = models.CharField(max_length=100)
    category = models.CharField(max_length=40)
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.ALWAYS)
    position = models.PositiveIntegerField(default=0, help_text="Lower comes first in the prompt.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["trigger", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["term", "trigger"], name="unique_negative_term")]

    def __str__(self):
        return self.term


class WebhookEvent(models.TextChoices):
    """What a job's webhook may be sent for (Job.webhook_events_filter)."""

    START = "start"  # a worker started it
    PROGRESS = "progress"  # a step of it (at most one such delivery waits per job)
    OUTPUT = "output"  # its images or video were written: it completed
    COMPLETED = "completed"  # it ended: completed, failed or cancelled


class WebhookStatus(models.TextChoices):
    PENDING = "pending"  # to be sent, or sent again after a failed attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: a 4xx or redirect, a refused address, or retried for WEBHOOK_RETRY_FOR


class WebhookDelivery(models.Model):
    """One webhook message about one change of a job, written in the transaction of that change (an outbox):
    sent once it commits, retried under the same id until delivered or given up (generation.webhooks)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=10, choices=WebhookEvent.choices)
    url = models.CharField(max_length=1000)
    status = models.CharField(max_length=10, choices=WebhookStatus.choices, default=WebhookStatus.PENDING)
    # Exactly what is signed and sent: the job as the API showed it at the first attempt; retries send it again.
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # While pending: when the next attempt is due (an attempt under way holds it a little later).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    retry_until = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Progress must not flood a receiver: a new step waits for the pending one to go.
            models.UniqueConstraint(fields=["job"], condition=models.Q(event="progress", status="pending"),
                                    name="one_pending_progress_webhook"),
        ]
        indexes = [models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="webhook_due")]

    def __str__(self):
        return f"{self.event} of job {self.job_id} ({self.status})"

    @property
    def webhook_id(self):
        """The `webhook-id` header: the same for every attempt, so that a receiver can drop repeats."""
        return f"msg_{self.id.hex}"


class WebhookAttempt(models.Model):
    """One try at sending a delivery and what came of it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    seconds = models.FloatField(help_text="How long the attempt took.")
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The address connected to.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=200, blank=True, help_text="The start of the response body.")

    class Meta:
        ordering = ["number"]

    def __str__(self):
        return f"attempt {self.number} of {self.delivery_id}: {self.status_code or self.error}"


class Installation(models.Model):
    """The settings every host of this installation must share, as recorded by the web tier (a single row).

    generation.installation writes it, and each worker compares its own settings with it at start."""

    ID = 1  # the one row's key

    storage_backend = models.CharField(max_length=10, help_text="STORAGE_BACKEND.")
    storage_endpoint = models.CharField(max_length=255, blank=True,
                                        help_text="MINIO_ENDPOINT (empty for local storage).")
    bucket_prefix = models.CharField(max_length=63, blank=True, help_text="MINIO_BUCKET_PREFIX.")
    visibility_timeout = models.PositiveIntegerField(help_text="CELERY_VISIBILITY_TIMEOUT, in seconds.")
    fingerprint = models.CharField(max_length=64, help_text="A digest of the other settings that must match.")
    fingerprinted = models.JSONField(default=dict, help_text=(
        "Those settings by variable name (a secret as a keyed digest), to name the one that differs."))
    marker = models.CharField(max_length=32, help_text=(
        "The object the recording process put in storage (bucket 'installation'): a host that cannot read it "
        "does not share the installation's storage."))
    recorded_by = models.CharField(max_length=200, help_text="The process that recorded these settings.")
    recorded_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="one_installation")]

    def __str__(self):
        return f"installation recorded by {self.recorded_by}"

    def settings(self):
        """The recorded settings by environment variable, as generation.installation.settings_here() gives them."""
        return {"STORAGE_BACKEND": self.storage_backend, "MINIO_ENDPOINT": self.storage_endpoint,
                "MINIO_BUCKET_PREFIX": self.bucket_prefix, "CELERY_VISIBILITY_TIMEOUT": self.visibility_timeout,
                **self.fingerprinted}
