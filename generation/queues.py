"""Per-queue figures for operators: backlog, workers online, waits, throughput and errors.

`figures` is the one definition of jobs per hour, error rate and average wait, and `load` of what a
pool holds now (waiting, released, running, per user); the API's /api/queues/ and the staff Dashboard
both read them.
"""

from datetime import timedelta

from django.db.models import Avg, CharField, Count, F, FloatField, Func, Max, Min, Q, Value
from django.db.models.functions import Cast
from django.utils import timezone

from . import brokers, clock, job_types, presence
from .models import Job, JobStatus
from .scheduler import RELEASED, WAITING

WINDOW = timedelta(hours=1)
HEAVIEST_USERS = 5  # users listed per pool, those with the most jobs waiting or in flight


def seconds_between(start, end):
    """Seconds from column `start` to column `end`, computed in the database."""
    return Func(F(end) - F(start), template="EXTRACT(EPOCH FROM %(expressions)s)", output_field=FloatField())


def figures(jobs, window=WINDOW):
    """Over the last `window`, in one query over `jobs`: jobs completed and failed, jobs per hour,
    error rate (failed / finished) and average wait in the queue (seconds, of jobs started)."""
    since = clock.since(window)  # the clock of the jobs' times
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


def load(jobs, heaviest=HEAVIEST_USERS):
    """What `jobs` (one pool's) hold now, in one query grouped by user: jobs waiting for the scheduler,
    released to the broker but not started, and running; the `heaviest` users by jobs waiting plus in
    flight (released or running, as the fair order counts them), most first; and the age in seconds
    of the oldest waiting job (None when none waits)."""
    rows = list(
        jobs.filter(status__in=[JobStatus.QUEUED, JobStatus.PROCESSING])
        .values("user__username")
        .annotate(waiting=Count("pk", filter=WAITING), released=Count("pk", filter=RELEASED),
                  running=Count("pk", filter=Q(status=JobStatus.PROCESSING)), oldest=Min("created_at", filter=WAITING))
        .order_by()
    )
    users = [{"user": row["user__username"], "waiting": row["waiting"], "in_flight": row["released"] + row["running"]}
             for row in rows]
    users.sort(key=lambda u: (-(u["waiting"] + u["in_flight"]), u["user"]))
    oldest = min((row["oldest"] for row in rows if row["oldest"] is not None), default=None)
    return {
        "waiting_jobs": sum(row["waiting"] for row in rows),
        "released_jobs": sum(row["released"] for row in rows),
        "running_jobs": sum(row["running"] for row in rows),
        "heaviest_users": users[:heaviest],
        "oldest_waiting_seconds": round((timezone.now() - oldest).total_seconds(), 1) if oldest else None,
    }


def worker_jobs(window=WINDOW):
    """Per worker node name: the jobs it completed and failed in the last `window`, and the one it runs now
    (None when idle), in one query; how an operator sees that a new worker takes work."""
    node = Func(F("worker"), Value("/"), Value(1), function="split_part", output_field=CharField())  # "<node>/<pid>"
    since = clock.since(window)
    rows = (Job.objects.exclude(worker="").filter(Q(status=JobStatus.PROCESSING) | Q(completed_at__gte=since))
            .annotate(node=node).values("node")
            .annotate(completed=Count("pk", filter=Q(status=JobStatus.COMPLETED, completed_at__gte=since)),
                      failed=Count("pk", filter=Q(status=JobStatus.FAILED, completed_at__gte=since)),
                      running_job=Max(Cast("pk", CharField()), filter=Q(status=JobStatus.PROCESSING)))
            .order_by())
    return {row.pop("node"): row for row in rows}


def queue_stats(window=WINDOW):
    """One dict per pool queue: its length in the broker, jobs queued and processing, the workers online (how
    many, how many have loaded their models, and each one's `worker_jobs`), its `figures` over the last `window`
    and its `load` now."""
    online = presence.online()
    ran = worker_jobs(window) if online else {}
    idle = {"completed": 0, "failed": 0, "running_job": None}
    stats = []
    for pool in job_types.POOLS.values():
        jobs = Job.objects.filter(queue=pool.queue)
        recent = figures(jobs, window)
        current = load(jobs)
        workers = [{**w, **ran.get(w["name"], idle)} for w in online if pool.queue in w.get("queues", [])]
        stats.append({
            "queue": pool.queue,
            "pool": pool.name,
            "length": brokers.client().llen(pool.queue),
            "queued_jobs": current["waiting_jobs"] + current["released_jobs"],
            "processing_jobs": current["running_jobs"],
            "workers": workers,
            "workers_online": len(workers),
            "workers_ready": sum(1 for w in workers if w["loaded"]),
            "average_wait_seconds": recent["average_wait_seconds"],
            "jobs_per_hour": recent["jobs_per_hour"],
            "error_rate": recent["error_rate"],
            **current,
        })
    return stats
