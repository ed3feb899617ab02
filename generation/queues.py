"""Per-queue figures for operators: backlog, workers online, waits, throughput and errors.

`figures` is the one definition of jobs per hour, error rate and average wait; the API's
/api/queues/ and the staff Dashboard both read it.
"""

from datetime import timedelta

from django.db.models import Avg, Count, F, FloatField, Func, Q
from django.utils import timezone

from . import brokers, job_types, presence
from .models import Job, JobStatus

WINDOW = timedelta(hours=1)


def seconds_between(start, end):
    """Seconds from column `start` to column `end`, computed in the database."""
    return Func(F(end) - F(start), template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


def figures(jobs, window=WINDOW):
    """Over the last `window`, in one query over `jobs`: jobs completed and failed, jobs per hour,
    error rate (failed / finished) and average wait in the queue (seconds, of jobs started)."""
    since = timezone.now() - window
    row = jobs.filter(Q(completed_at__gte=since) | Q(started_at__gte=since)).aggregate(
        completed=Count("pk", filter=Q(status=JobStatus.COMPLETED, completed_at__gte=since)),
        failed=Count("pk", filter=Q(status=JobStatus.FAILED, completed_at__gte=since)),
        wait=Avg(seconds_between("created_at", "started_at"), filter=Q(started_at__gte=since)),
    )
    finished = row["completed"] + row["failed"]
    return {
        "completed": row["completed"],
        "failed": row["failed"],
        "jobs_per_hour": round(row["completed"] * timedelta(hours=1) / window, 2),
        "error_rate": round(row["failed"] / finished, 4) if finished else 0.0,
        "average_wait_seconds": round(row["wait"], 3) if row["wait"] is not None else None,
    }


def queue_stats(window=WINDOW):
    """One dict per pool queue: its length in the broker, jobs queued and processing, the workers
    online, and its `figures` over the last `window`."""
    online = presence.online()
    stats = []
    for pool in job_types.POOLS.values():
        jobs = Job.objects.filter(queue=pool.queue)
        recent = figures(jobs, window)
        stats.append({
            "queue": pool.queue,
            "pool": pool.name,
            "length": brokers.client().llen(pool.queue),
            "queued_jobs": jobs.filter(status=JobStatus.QUEUED).count(),
            "processing_jobs": jobs.filter(status=JobStatus.PROCESSING).count(),
            "workers": [w for w in online if pool.queue in w.get("queues", [])],
            "average_wait_seconds": recent["average_wait_seconds"],
            "jobs_per_hour": recent["jobs_per_hour"],
            "error_rate": recent["error_rate"],
        })
    return stats
