from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.utils.html import format_html

from . import storage, submission
from .models import Account, Image, Job, JobStatus, NegativeTerm, ReferenceImage, Video


class AccountInline(admin.StackedInline):
    model = Account
    can_delete = False
    verbose_name_plural = "scheduling"
    fields = ["tier"]


class OurVidzUserAdmin(UserAdmin):
    """Django's own user admin, with the user's scheduling tier."""

    inlines = [AccountInline]
    list_display = [*UserAdmin.list_display, "tier"]
    list_select_related = ["account"]

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
    list_display = ["short_id", "status", "job_type", "user", "queue", "duration_seconds", "created_at"]
    list_filter = ["status", "job_type", "queue", "created_at"]
    search_fields = ["prompt", "id", "user__username", "user__email"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
    inlines = [ImageInline, VideoInline]
    actions = ["cancel_jobs", "retry_jobs"]
    readonly_fields = [f.name for f in Job._meta.fields]

    @admin.display(description="id")
    def short_id(self, job):
        return str(job.pk)[:8]

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
        new = [submission.retry(job) for job in failed]
        self.message_user(request, f"Queued {len(new)} new jobs.")
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
