"""Housekeeping tasks run by Celery beat on the maintenance queue."""

import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from . import job_types
from .models import Job, JobStatus
from .signals import job_failed

log = logging.getLogger(__name__)

# Time past a job's hard limit before it counts as stalled (worker killed, machine lost).
GRACE_SECONDS = 120


@shared_task(name="generation.fail_stalled_jobs")
def fail_stalled_jobs():
    """Mark failed every job still processing after its time limit; nothing stays processing forever."""
    return len([job for job in stalled_jobs() if _fail(job)])


def stalled_jobs(now=None):
    now = now or timezone.now()
    for job in Job.objects.filter(status=JobStatus.PROCESSING, started_at__isnull=False):
        limit = job_types.get(job.job_type).hard_time_limit(job.num_images) + GRACE_SECONDS
        if job.started_at < now - timedelta(seconds=limit):
            yield job


def _fail(job):
    log.warning("job %s stalled in processing since %s; marking it failed", job.pk, job.started_at)
    job_failed.send(sender="housekeeping", job=job, metadata={"stalled": True}, fields={},
                    error="The worker stopped responding before the job finished.")
    return Job.objects.filter(pk=job.pk, status=JobStatus.FAILED).exists()
