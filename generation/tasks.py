"""Housekeeping tasks run by Celery beat on the maintenance queue."""

import logging
from datetime import timedelta

from celery import shared_task
from django.db.models import F
from django.db.models.functions import Now

from . import job_types, outcomes, retention, scheduler, webhooks
from .models import Job, JobStatus

log = logging.getLogger(__name__)

# Time past a job's hard limit before the reaper fails it: the last resort, after the worker's own time
# limits and the scheduler's recovery of jobs whose worker vanished.
GRACE_SECONDS = 120


@shared_task(name="generation.schedule")
def schedule():
    """Beat's safety net: in each pool, jobs whose worker vanished or whose message the broker lost wait
    again, then the pool's next jobs are released (after a broker outage, a dead worker, a lost message,
    a missed event). Returns how many were released."""
    released = 0
    for pool in job_types.POOLS.values():
        scheduler.recover_orphans(pool.queue)
        scheduler.recover_lost(pool.queue)
        released += len(scheduler.release(pool.queue))
    return released


@shared_task(name="generation.resend_lost_webhooks")
def resend_lost_webhooks():
    """Beat's safety net for webhooks: deliveries due whose message the broker lost are sent again."""
    return webhooks.resend_lost()


@shared_task(name="generation.fail_stalled_jobs")
def fail_stalled_jobs():
    """Mark failed every job still processing after its time limit; nothing stays processing forever."""
    failed = 0
    for job in stalled_jobs():
        log.warning("job %s stalled in processing since %s; marking it failed", job.pk, job.started_at)
        limit = job.type.time_limit(job.num_images)
        message = f"The job ran far past its time limit of {limit} seconds without ending; it was stopped."
        failed += outcomes.record_failure(job.pk, message, {"stalled": True}, {})
    return failed


def stalled_jobs():
    """The jobs processing for longer than their hard time limit and GRACE_SECONDS, timed by the database's
    clock: the maintenance worker's own may be off (ahead, it would fail jobs running fine elsewhere)."""
    running = Job.objects.filter(status=JobStatus.PROCESSING, started_at__isnull=False).annotate(
        running_for=Now() - F("started_at"))
    for job in running:
        limit = job_types.get(job.job_type).hard_time_limit(job.num_images) + GRACE_SECONDS
        if job.running_for > timedelta(seconds=limit):
            yield job


@shared_task(name="generation.expire_outputs")
def expire_outputs():
    """Delete the images, videos and webhook records whose retention has passed (generation.retention); daily."""
    deleted = retention.delete_expired()
    if any(deleted.values()):
        log.info("retention deleted %(images)d images, %(videos)d videos and %(webhook_deliveries)d webhook "
                 "deliveries", deleted)
    return deleted
