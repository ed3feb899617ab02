"""Per-queue figures for operators: backlog, workers online, waits, throughput and errors."""

from datetime import timedelta

from django.db.models import Avg, Count, F, Q
from django.utils import timezone

from . import brokers, job_types, workers
from .models import Job, JobStatus


def queue_stats(window=timedelta(hours=1)):
    """One dict per pool queue with figures over the last `window`."""
    since = timezone.now() - window
    online = workers.online()
    stats = []
    for pool in job_types.POOLS.values():
        jobs = Job.objects.filter(queue=pool.queue)
        recent = jobs.filter(completed_at__gte=since).aggregate(
            completed=Count("pk", filter=Q(status=JobStatus.COMPLETED)),
            failed=Count("pk", filter=Q(status=JobStatus.FAILED)),
        )
        wait = jobs.filter(started_at__gte=since).aggregate(avg=Avg(F("started_at") - F("created_at")))["avg"]
        finished = recent["completed"] + recent["failed"]
        stats.append({
            "queue": pool.queue,
            "pool": pool.name,
            "length": brokers.client().llen(pool.queue),
            "queued_jobs": jobs.filter(status=JobStatus.QUEUED).count(),
            "processing_jobs": jobs.filter(status=JobStatus.PROCESSING).count(),
            "workers": [w for w in online if pool.queue in w.get("queues", [])],
            "average_wait_seconds": round(wait.total_seconds(), 3) if wait is not None else None,
            "jobs_per_hour": round(recent["completed"] * timedelta(hours=1) / window, 2),
            "error_rate": round(recent["failed"] / finished, 4) if finished else 0.0,
        })
    return stats
