"""Per-user limits, by scheduling tier: jobs waiting or running at once, submissions per minute, reference
uploads per day and the bytes of references kept. Each is a setting ("standard,priority" or one number for
both; 0: no limit); a limit reached is a QuotaExceeded that the API answers with 429 and Retry-After."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Min, Sum
from django.utils import timezone

from . import job_types
from .models import Job, JobStatus, ReferenceImage, tier_of

ACTIVE = (JobStatus.QUEUED, JobStatus.PROCESSING)
# Each limit's setting.
SETTINGS = {"active_jobs": "QUOTA_ACTIVE_JOBS", "submissions_per_minute": "QUOTA_SUBMISSIONS_PER_MINUTE",
            "references_per_day": "QUOTA_REFERENCES_PER_DAY", "reference_bytes": "QUOTA_REFERENCE_BYTES"}


class QuotaExceeded(Exception):
    """A limit reached: `message` names it, `retry_after` says when to try again (seconds)."""

    def __init__(self, code, message, retry_after):
        self.code, self.retry_after = code, max(1, int(retry_after))
        super().__init__(message)


def _per_tier(values, tier):
    return values[min(tier, len(values) - 1)]


def limit(name, user):
    """`user`'s limit `name` (a key of `limits`), reading their tier only when the tiers' limits differ."""
    values = getattr(settings, SETTINGS[name])
    return values[0] if len(set(values)) == 1 else _per_tier(values, tier_of(user))


def limits(user, tier=None):
    """The limits that apply to `user` (at `tier`, default theirs)."""
    tier = tier_of(user) if tier is None else tier
    return {name: _per_tier(getattr(settings, setting), tier) for name, setting in SETTINGS.items()}


def check_active(user, tier):
    """Raise QuotaExceeded when `user` has more jobs waiting or running than their tier allows, the one just
    recorded (in the caller's transaction) included."""
    most = _per_tier(settings.QUOTA_ACTIVE_JOBS, tier)
    if not most:
        return
    # By queue too: the scheduler's partial index of active jobs (queue, user, ...) then serves the count.
    queues = [pool.queue for pool in job_types.POOLS.values()]
    active = Job.objects.filter(queue__in=queues, user=user, status__in=ACTIVE)
    if active[:most + 1].count() <= most:  # counts no further than one past the limit
        return
    # Try again when the quickest of them could be done.
    soonest = active.aggregate(soonest=Min("expected_seconds"))["soonest"] or 30
    raise QuotaExceeded("active_jobs", f"You have {most} jobs waiting or running, the most allowed at once; "
                                       "submit more when some have finished.", soonest)


def check_reference_upload(user, size):
    """Raise QuotaExceeded when an upload of `size` bytes would pass `user`'s daily count or stored bytes."""
    quota = limits(user)
    now = timezone.now()
    today = ReferenceImage.objects.filter(user=user, created_at__gte=now - timedelta(days=1))
    if quota["references_per_day"] and today.count() >= quota["references_per_day"]:
        oldest = today.order_by("created_at").values_list("created_at", flat=True).first()
        wait = (oldest + timedelta(days=1) - now).total_seconds()
        raise QuotaExceeded("references_per_day", f"You uploaded {quota['references_per_day']} references in "
                                                  "the last 24 hours, the most allowed.", wait)
    stored = ReferenceImage.objects.filter(user=user).aggregate(total=Sum("size_bytes"))["total"] or 0
    if quota["reference_bytes"] and stored + size > quota["reference_bytes"]:
        raise QuotaExceeded("reference_bytes", f"Your references would take {_mib(stored + size)}, more than "
                                               f"your {_mib(quota['reference_bytes'])}; delete some first.", 3600)


def _mib(size):
    return f"{size / 2**20:.1f} MiB"
