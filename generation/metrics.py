"""Prometheus figures for operators, read from the database and Redis each time they are scraped.

The web tier is several gunicorn processes that restart now and then: a counter kept in one process's
memory would show that process's share, and lose it at its restart. So nothing here counts in memory;
`Collector` reads what every process shares when Prometheus asks (the jobs table, the credit ledger, the webhook
deliveries, the queues as the scheduler sees them, the workers' heartbeats), and any web process answers the same.

Counters are counts and sums of rows over all time; the wait and generation-time histograms count every
finished job in fixed buckets, so Prometheus's rate() and increase() choose the window. They only go down
when rows are deleted (a user's account with its jobs), which Prometheus reads as a counter reset.
"""

import logging

import redis
from django.db.models import Count, F, Min, Q, Sum
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)

from . import brokers, job_types, presence, queues, scheduler
from .models import FINISHED, CreditEntry, CreditKind, Job, JobStatus, WebhookDelivery, WebhookEvent, WebhookStatus

log = logging.getLogger(__name__)

# Upper bounds in seconds. Waits run from seconds to hours under a backlog; generation from a fraction of a
# second (the tiny development models) to the minutes of a WAN video (job_types' expected seconds: 4 to 240).
WAIT_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
GENERATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 90, 120, 180, 240, 300, 600, 1200)
QUEUE_STATES = ("waiting", "released", "running")  # the scheduler's: in the database, in the broker, on a GPU

STARTED_AND_FINISHED = Q(status__in=FINISHED, started_at__isnull=False)
COMPLETED = Q(status=JobStatus.COMPLETED, started_at__isnull=False, completed_at__isnull=False)


def job_figures():
    """Per job type, in one grouped query over every job: jobs submitted and finished by status, the wait
    (submission to start) of finished jobs that started, and the generation time (start to completion, as
    the Dashboard counts it) of completed ones, both as bucket counts and sums; the generation time over the
    job's expected seconds (sum and count); and the GPU seconds spent (the worker's `generate` timing)."""
    wait = queues.seconds_between("created_at", "started_at")
    generation = queues.seconds_between("started_at", "completed_at")
    aggregates = {
        "submitted": Count("pk"),
        **{status: Count("pk", filter=Q(status=status)) for status in FINISHED},
        "wait_count": Count("pk", filter=STARTED_AND_FINISHED),
        "wait_sum": Sum(wait, filter=STARTED_AND_FINISHED),
        "generation_count": Count("pk", filter=COMPLETED),
        "generation_sum": Sum(generation, filter=COMPLETED),
        "ratio_count": Count("pk", filter=COMPLETED & Q(expected_seconds__gt=0)),
        "ratio_sum": Sum(generation / F("expected_seconds"), filter=COMPLETED & Q(expected_seconds__gt=0)),
        "gpu_seconds": Sum("gpu_seconds"),
    }
    for i, bound in enumerate(WAIT_BUCKETS):
        aggregates[f"wait_le_{i}"] = Count("pk", filter=STARTED_AND_FINISHED & LessThanOrEqual(wait, bound))
    for i, bound in enumerate(GENERATION_BUCKETS):
        aggregates[f"generation_le_{i}"] = Count("pk", filter=COMPLETED & LessThanOrEqual(generation, bound))
    rows = {row["job_type"]: row for row in Job.objects.values("job_type").annotate(**aggregates).order_by()}
    empty = {key: 0 for key in aggregates}
    return {name: {**empty, **{k: v or 0 for k, v in rows.get(name, {}).items() if k != "job_type"}}
            for name in _job_types(rows)}


def _job_types(found):
    """Every job type of the table (a series for each, 0 until used), then any other found in the rows."""
    return [*job_types.JOB_TYPES, *sorted(set(found) - set(job_types.JOB_TYPES))]


def credit_figures():
    """Per job type: credits charged (what submissions took from balances) and credits refunded."""
    rows = (CreditEntry.objects.filter(kind__in=[CreditKind.CHARGE, CreditKind.REFUND]).exclude(job_type="")
            .values("job_type").annotate(charged=Sum("amount", filter=Q(kind=CreditKind.CHARGE)),
                                         refunded=Sum("amount", filter=Q(kind=CreditKind.REFUND)))
            .order_by())
    found = {row["job_type"]: (-(row["charged"] or 0), row["refunded"] or 0) for row in rows}
    return {name: found.get(name, (0, 0)) for name in _job_types(found)}


def webhook_figures():
    """Webhook deliveries on record, by (event, status), and the age in seconds of the oldest pending one (0 when
    none is). Counts of rows, not counters: retention deletes old deliveries."""
    rows = list(WebhookDelivery.objects.values("event", "status").annotate(
        deliveries=Count("pk"), oldest=Min("created_at", filter=Q(status=WebhookStatus.PENDING))).order_by())
    counts = {(event, status): 0 for event in WebhookEvent.values for status in WebhookStatus.values}
    counts.update({(row["event"], row["status"]): row["deliveries"] for row in rows})
    oldest = min((row["oldest"] for row in rows if row["oldest"] is not None), default=None)
    return counts, (timezone.now() - oldest).total_seconds() if oldest else 0.0


def pool_figures():
    """Per pool: its jobs waiting, released and running (generation.queues.load), the messages in its broker
    queue, the age of its oldest waiting job, and its online workers (generation.presence). Raises
    redis.RedisError when the broker cannot be reached."""
    online = presence.online()
    server = brokers.client()
    figures = []
    for pool in job_types.POOLS.values():
        load = queues.load(Job.objects.filter(queue=pool.queue))
        figures.append({
            "pool": pool.name, "queue": pool.queue, "broker_messages": server.llen(pool.queue),
            "waiting": load["waiting_jobs"], "released": load["released_jobs"], "running": load["running_jobs"],
            "oldest_waiting_seconds": load["oldest_waiting_seconds"] or 0.0,
            "workers": scheduler.pool_workers(pool.queue, online),
        })
    return figures


def _histogram(name, documentation, buckets, figures, key):
    family = HistogramMetricFamily(name, documentation, labels=["job_type"])
    for job_type, row in figures.items():
        counts = [(str(float(bound)), row[f"{key}_le_{i}"]) for i, bound in enumerate(buckets)]
        family.add_metric([job_type], counts + [("+Inf", row[f"{key}_count"])], sum_value=row[f"{key}_sum"])
    return family


def job_families(figures):
    """The jobs' metric families from job_figures()."""
    submitted = CounterMetricFamily("ourvidz_jobs_submitted", "Jobs submitted, by job type.", labels=["job_type"])
    finished = CounterMetricFamily("ourvidz_jobs_finished", "Jobs that ended, by job type and how they ended.",
                                   labels=["job_type", "status"])
    gpu = CounterMetricFamily("ourvidz_job_gpu_seconds", "Seconds workers spent rendering, by job type.",
                              labels=["job_type"])
    ratio = SummaryMetricFamily("ourvidz_job_generation_ratio", "Generation time over the job's expected time, "
                                "of completed jobs.", labels=["job_type"])
    for job_type, row in figures.items():
        submitted.add_metric([job_type], row["submitted"])
        for status in FINISHED:
            finished.add_metric([job_type, status], row[status])
        gpu.add_metric([job_type], row["gpu_seconds"])
        ratio.add_metric([job_type], count_value=row["ratio_count"], sum_value=row["ratio_sum"])
    return [
        submitted, finished,
        _histogram("ourvidz_job_wait_seconds", "Seconds from submission to start, of finished jobs that started.",
                   WAIT_BUCKETS, figures, "wait"),
        _histogram("ourvidz_job_generation_seconds", "Seconds from start to completion, of completed jobs.",
                   GENERATION_BUCKETS, figures, "generation"),
        ratio, gpu,
    ]


def credit_families(figures):
    """The ledger's metric families from credit_figures()."""
    charged = CounterMetricFamily("ourvidz_credits_charged", "Credits charged for submissions, by job type.",
                                  labels=["job_type"])
    refunded = CounterMetricFamily("ourvidz_credits_refunded", "Credits refunded for jobs, by job type.",
                                   labels=["job_type"])
    for job_type, (charge, refund) in figures.items():
        charged.add_metric([job_type], charge)
        refunded.add_metric([job_type], refund)
    return [charged, refunded]


def webhook_families(figures):
    """The webhook deliveries' metric families from webhook_figures()."""
    counts, oldest = figures
    deliveries = GaugeMetricFamily("ourvidz_webhook_deliveries", "Webhook deliveries on record: pending, delivered "
                                   "or given up (failed), by event.", labels=["event", "status"])
    for (event, status), number in counts.items():
        deliveries.add_metric([event, status], number)
    return [deliveries, GaugeMetricFamily("ourvidz_webhook_oldest_pending_seconds", "Age of the oldest webhook "
                                          "delivery still pending (0 when none is).", value=oldest)]


def pool_families(figures):
    """The queues' and workers' metric families from pool_figures()."""
    jobs = GaugeMetricFamily("ourvidz_queue_jobs", "A pool's unfinished jobs: waiting in the database, released "
                             "to the broker, running.", labels=["pool", "queue", "state"])
    messages = GaugeMetricFamily("ourvidz_queue_broker_messages", "Messages in a pool's broker queue.",
                                 labels=["pool", "queue"])
    oldest = GaugeMetricFamily("ourvidz_queue_oldest_waiting_seconds", "Age of a pool's oldest waiting job "
                               "(0 when none waits).", labels=["pool", "queue"])
    online = GaugeMetricFamily("ourvidz_workers_online", "Workers of a pool with a fresh heartbeat.",
                               labels=["pool"])
    ready = GaugeMetricFamily("ourvidz_workers_ready", "Workers of a pool that have loaded their model.",
                              labels=["pool"])
    worker = GaugeMetricFamily("ourvidz_worker_online", "1 for each online worker, with the model it loaded "
                               "(empty while it loads).", labels=["pool", "worker", "model"])
    used = GaugeMetricFamily("ourvidz_worker_gpu_memory_used_bytes", "GPU memory in use on a worker's GPU, as "
                             "its driver counts it.", labels=["pool", "worker"])
    total = GaugeMetricFamily("ourvidz_worker_gpu_memory_total_bytes", "GPU memory of a worker's GPU.",
                              labels=["pool", "worker"])
    for pool in figures:
        for state in QUEUE_STATES:
            jobs.add_metric([pool["pool"], pool["queue"], state], pool[state])
        messages.add_metric([pool["pool"], pool["queue"]], pool["broker_messages"])
        oldest.add_metric([pool["pool"], pool["queue"]], pool["oldest_waiting_seconds"])
        online.add_metric([pool["pool"]], len(pool["workers"]))
        ready.add_metric([pool["pool"]], sum(1 for w in pool["workers"] if w["loaded"]))
        for w in pool["workers"]:
            loaded = w["loaded"]
            worker.add_metric([pool["pool"], w["name"], loaded.get("model") or ""], 1)
            if loaded.get("gpu_memory_total_bytes"):
                used.add_metric([pool["pool"], w["name"]], loaded["gpu_memory_used_bytes"])
                total.add_metric([pool["pool"], w["name"]], loaded["gpu_memory_total_bytes"])
    return [jobs, messages, oldest, online, ready, worker, used, total]


class Collector:
    """The figures above as Prometheus metric families, computed at each scrape. With the broker down the
    database's figures are still served, and ourvidz_broker_up says 0."""

    def collect(self):
        yield from job_families(job_figures())
        yield from credit_families(credit_figures())
        yield from webhook_families(webhook_figures())
        broker_up = GaugeMetricFamily("ourvidz_broker_up", "1 when Redis (the broker and the workers' "
                                      "heartbeats) answered this scrape.")
        try:
            pools = pool_figures()
        except redis.RedisError as exc:
            log.warning("metrics: no queue or worker figures (%s)", exc)
            broker_up.add_metric([], 0)
        else:
            broker_up.add_metric([], 1)
            yield from pool_families(pools)
        yield broker_up

    def describe(self):
        return []  # registering it must not run its queries
