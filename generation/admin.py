from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import credits, negative_prompts, quotas, storage, submission, webhooks
from .models import (
    Account,
    CreditEntry,
    CreditKind,
    Image,
    Installation,
    Job,
    JobStatus,
    NegativeTerm,
    ReferenceImage,
    Video,
    WebhookAttempt,
    WebhookDelivery,
)


class AccountInline(admin.StackedInline):
    model = Account
    can_delete = False
    verbose_name_plural = "scheduling and credits"
    fields = ["tier", "unlimited", "credits", "grant_link"]
    readonly_fields = ["credits", "grant_link"]

    @admin.display(description="")
    def grant_link(self, account):
        if not account.pk:
            return ""
        url = reverse("admin:generation_creditentry_add") + f"?user={account.user_id}"
        return format_html('<a href="{}">Grant or take back credits</a> · <a href="{}">ledger</a>', url,
                           reverse("admin:generation_creditentry_changelist") + f"?user__id__exact={account.user_id}")


class OurVidzUserAdmin(UserAdmin):
    """Django's own user admin, with the user's scheduling tier and credits."""

    inlines = [AccountInline]
    list_display = [*UserAdmin.list_display, "tier", "credits"]
    list_select_related = ["account"]

    @admin.display(description="credits")
    def credits(self, user):
        account = getattr(user, "account", None)
        return account.credits if account else 0

    @admin.display(description="tier")
    def tier(self, user):
        account = getattr(user, "account", None)
        return "priority (staff)" if user.is_staff else (account.get_tier_display() if account else "standard")


admin.site.unregister(get_user_model())
admin.site.register(get_user_model(), OurVidzUserAdmin)


class ThumbnailMixin:
    """A `preview` column showing an asset's thumbnail through a signed URL."""

    @admin.display(description="thumbnail")
    def preview(self, asset):
        if not asset.thumbnail_path:
            return "-"
        url = storage.signed_url(asset.bucket, asset.thumbnail_path)
        return format_html('<img src="{}" style="max-height:96px;max-width:96px" alt="">', url)


class AssetInline(ThumbnailMixin, admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ImageInline(AssetInline):
    model = Image
    fields = readonly_fields = ["preview", "image_index", "seed", "width", "height", "image_path", "created_at"]


class VideoInline(AssetInline):
    model = Video
    fields = readonly_fields = ["preview", "duration", "fps", "frame_count", "width", "height", "video_path",
                                "created_at"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["short_id", "status", "job_type", "user", "queue", "ran_on", "duration_seconds", "created_at"]
    list_filter = ["status", "job_type", "queue", "created_at"]
    search_fields = ["prompt", "id", "user__username", "user__email", "worker"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    inlines = [ImageInline, VideoInline]
    actions = ["cancel_jobs", "retry_jobs"]
    readonly_fields = [f.name for f in Job._meta.fields] + ["attempts_by_worker"]

    @admin.display(description="id")
    def short_id(self, job):
        return str(job.pk)[:8]

    @admin.display(description="worker")
    def ran_on(self, job):
        """The worker of the job's latest start (node name and host)."""
        latest = (job.metadata.get("attempts") or [{}])[-1]
        return f"{latest.get('worker')} ({latest.get('host')})" if latest else "–"

    @admin.display(description="attempts")
    def attempts_by_worker(self, job):
        """Each start of the job: when, on which worker and host."""
        attempts = job.metadata.get("attempts", [])
        rows = [(a.get("started_at", ""), a.get("worker", ""), a.get("host", "")) for a in attempts]
        if not rows:
            return "–"
        return format_html_join(mark_safe("<br>"), "{}: {} on {}", rows)

    @admin.display(description="duration (s)")
    def duration_seconds(self, job):
        return None if job.duration is None else round(job.duration, 1)

    def has_add_permission(self, request):
        return False  # jobs come through the API, which validates and queues them

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        moved = sum(submission.cancel(job) for job in queryset)
        self.message_user(request, f"Cancelled {moved} of {queryset.count()} jobs.")

    @admin.action(description="Retry selected failed jobs (as new jobs)")
    def retry_jobs(self, request, queryset):
        failed = queryset.filter(status=JobStatus.FAILED)
        new, refused = [], []
        for job in failed:
            try:
                new.append(submission.retry(job))
            except (credits.InsufficientCredits, quotas.QuotaExceeded, negative_prompts.TokenizerUnavailable) as exc:
                refused.append(f"{job.user}: {exc}")
        self.message_user(request, f"Queued {len(new)} new jobs.")
        if refused:
            self.message_user(request, "Not retried: " + "; ".join(refused), messages.ERROR)
        skipped = queryset.count() - len(new)
        if skipped:
            self.message_user(request, f"Skipped {skipped} jobs that have not failed.", messages.WARNING)


class AssetAdmin(ThumbnailMixin, admin.ModelAdmin):
    search_fields = ["prompt", "job__id", "user__username"]
    list_select_related = ["user", "job"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


@admin.register(Image)
class ImageAdmin(AssetAdmin):
    list_display = ["id", "preview", "user", "job", "image_index", "seed", "created_at"]


@admin.register(Video)
class VideoAdmin(AssetAdmin):
    list_display = ["id", "preview", "user", "job", "duration", "created_at"]


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = readonly_fields = ["number", "started_at", "seconds", "address", "status_code", "error",
                                "response_excerpt"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Webhook deliveries with every attempt; "redeliver" sends chosen ones again (same id, same body)."""

    list_display = ["id", "event", "status", "job", "url", "created_at", "next_attempt_at", "finished_at"]
    list_filter = ["status", "event", "created_at"]
    search_fields = ["id", "job__id", "url", "job__user__username"]
    list_select_related = ["job"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request):
        return False  # jobs' changes write them

    @admin.action(description="Redeliver selected webhooks")
    def redeliver(self, request, queryset):
        again = webhooks.redeliver(queryset)
        self.message_user(request, f"Sending {again} of {queryset.count()} webhook deliveries again.")


@admin.register(ReferenceImage)
class ReferenceImageAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "original_name", "width", "height", "size_bytes", "created_at"]
    search_fields = ["original_name", "user__username"]


@admin.register(NegativeTerm)
class NegativeTermAdmin(admin.ModelAdmin):
    list_display = ["term", "category", "trigger", "position", "enabled"]
    list_editable = ["position", "enabled"]
    list_filter = ["trigger", "category", "enabled"]
    search_fields = ["term"]


class GrantForm(forms.ModelForm):
    """A grant: who, how many (negative to take back), why."""

    class Meta:
        model = CreditEntry
        fields = ["user", "amount", "reason"]

    def clean(self):
        data = super().clean()
        if data.get("user") and data.get("amount") is not None:
            balance = credits.account(data["user"]).credits
            if balance + data["amount"] < 0:
                self.add_error("amount", f"{data['user']} has {balance} credits; at most that can be taken back.")
        return data


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin):
    """The ledger, read-only; adding an entry grants (or, negative, takes back) credits through
    generation.credits.grant, never below zero."""

    list_display = ["created_at", "user", "kind", "amount", "balance", "price", "job_type", "reason"]
    list_filter = ["kind", "job_type"]
    search_fields = ["user__username", "reason", "job__id"]
    date_hierarchy = "created_at"
    form = GrantForm
    raw_id_fields = ["user"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        entry = credits.grant(obj.user, obj.amount, obj.reason or f"granted by {request.user}")
        obj.pk, obj.kind, obj.balance = entry.pk, CreditKind.GRANT, entry.balance


@admin.register(Installation)
class InstallationAdmin(admin.ModelAdmin):
    """The settings every host must share, as recorded (generation.installation), read-only: `manage.py setup` on
    the web host records them anew. Deleted, the next web process or worker to start records its own."""

    list_display = ["storage_backend", "storage_endpoint", "bucket_prefix", "visibility_timeout", "recorded_by",
                    "recorded_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
