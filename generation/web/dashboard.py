"""The operators' Dashboard: queues, what waits in them and for whom, workers, throughput, errors, and
generation time per job type.

The figures come from plain functions (`totals`, `timings_by_type`, `latest_failures`, `timing_chart`,
`overview`) that tests call without HTTP; each is one aggregate query (or a fixed few), whatever the
number of jobs. The view only checks access and renders them.
"""

import logging
import math
from datetime import timedelta
from pathlib import PurePath

import redis
from django.conf import settings
from django.contrib.auth.decorators import user_passes_test
from django.core.exceptions import PermissionDenied
from django.db.models import Aggregate, Count, F, FloatField
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from .. import clock, job_types, queues
from ..models import Job, JobStatus

log = logging.getLogger(__name__)

STATS_WINDOW = queues.WINDOW
TIMING_WINDOW = timedelta(hours=24)  # the generation-time chart
FAILURES_SHOWN = 20
REFRESH_SECONDS = 30


# --- figures ---------------------------------------------------------------------------------

class Percentile(Aggregate):
    """PostgreSQL's continuous percentile of an expression (an ordered-set aggregate)."""

    function = "PERCENTILE_CONT"
    name = "Percentile"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, fraction, **extra):
        super().__init__(expression, fraction=float(fraction), output_field=FloatField(), **extra)


def totals(window=STATS_WINDOW):
    """Figures over all queues: jobs per hour, error rate, average wait (seconds)."""
    return queues.figures(Job.objects.all(), window)


def timings_by_type(window=TIMING_WINDOW):
    """Per job type with completed jobs in `window`: how long they took against what was expected.

    Actual time is a job's duration (started_at to completed_at: generation and storing its files,
    not its wait in the queue). Expected is the job's own expected_seconds (SDXL: per image times
    the batch). One grouped query; rows in the job-type table's order.
    """
    since = clock.since(window)  # the clock of the jobs' times
    duration = queues.seconds_between("started_at", "completed_at")
    rows = (
        Job.objects.filter(status=JobStatus.COMPLETED, completed_at__gte=since, started_at__isnull=False)
        .values("job_type")
        .annotate(
            jobs=Count("pk"),
            median=Percentile(duration, 0.5),
            p90=Percentile(duration, 0.9),
            expected=Percentile("expected_seconds", 0.5),
            ratio=Percentile(duration / F("expected_seconds"), 0.5),
        )
        .order_by()
    )
    order = {name: i for i, name in enumerate(job_types.JOB_TYPES)}
    result = [
        {
            "job_type": row["job_type"],
            "jobs": row["jobs"],
            "median_seconds": round(row["median"], 3),
            "p90_seconds": round(row["p90"], 3),
            "expected_seconds": round(row["expected"], 3),
            "median_ratio": round(row["ratio"], 3) if row["ratio"] is not None else None,
        }
        for row in rows
    ]
    return sorted(result, key=lambda r: (order.get(r["job_type"], len(order)), r["job_type"]))


def latest_failures(limit=FAILURES_SHOWN):
    """The latest failed jobs, newest first, with their error and a link to the job in the admin."""
    jobs = (
        Job.objects.filter(status=JobStatus.FAILED)
        .select_related("user")
        .only("id", "job_type", "queue", "error_message", "worker", "created_at", "completed_at", "user__username")
        .order_by(F("completed_at").desc(nulls_last=True), "-created_at")[:limit]
    )
    return [
        {
            "id": job.pk,
            "time": job.completed_at or job.created_at,
            "user": job.user.get_username(),
            "job_type": job.job_type,
            "queue": job.queue,
            "error": job.error_message,
            "worker": job.worker.rpartition("/")[0],  # the node name; empty when no worker started it
            "admin_url": reverse("admin:generation_job_change", args=[job.pk]),
        }
        for job in jobs
    ]


# --- presentation ----------------------------------------------------------------------------

def format_seconds(seconds):
    """4.2 s, 38 s, 3 min 05 s, 2 h 10 min; an en dash when unknown."""
    if seconds is None:
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(round(seconds) // 60, 60)
    return f"{hours} h {rest:02d} min"


def format_rate(rate):
    return f"{rate * 100:.1f} %"


def format_count(value):
    return f"{value:g}" if value < 1000 else f"{value:,.0f}"


def _nice_ceiling(value):
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above value."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


BARS = [  # (row key, css class, legend)
    ("expected_seconds", "expected", "expected"),
    ("median_seconds", "median", "median actual"),
    ("p90_seconds", "p90", "p90 actual"),
]


def _axis_label(seconds):
    """Tick labels in plain units: 0, 25 s, 2.5 s, 5 min."""
    if seconds == 0:
        return "0"
    if seconds >= 300 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def timing_chart(rows, width=1180):
    """Geometry of a horizontal grouped bar chart, one group per job type, for the template's SVG.

    Each group has three bars on one linear axis: the expected seconds, the median and the 90th
    percentile of the actual ones.
    """
    label_w, value_w, top, bar_h, bar_gap, group_gap = 190, 80, 50, 11, 3, 16
    plot_w = width - label_w - value_w
    group_h = len(BARS) * bar_h + (len(BARS) - 1) * bar_gap
    maximum = _nice_ceiling(max([r[key] for r in rows for key, _, _ in BARS] or [0]))
    ticks = [
        {"x": round(label_w + plot_w * i / 4, 1), "label": _axis_label(maximum * i / 4)}
        for i in range(5)
    ]
    groups = []
    y = top
    for row in rows:
        bars = []
        for i, (key, css, legend) in enumerate(BARS):
            value = row[key]
            bar_w = max(plot_w * value / maximum, 1.5) if value else 0
            bar_y = y + i * (bar_h + bar_gap)
            bars.append({
                "css": css, "legend": legend, "seconds": value, "text": format_seconds(value),
                "x": label_w, "y": bar_y, "width": round(bar_w, 1), "height": bar_h,
                "text_x": round(label_w + bar_w + 6, 1), "text_y": bar_y + bar_h - 2,
            })
        groups.append({**row, "bars": bars, "label_y": y + group_h / 2 + 4, "y": y - group_gap / 2,
                       "height": group_h + group_gap})
        y += group_h + group_gap
    height = max(y + 12, top + 60)
    return {
        "width": width, "height": height, "plot_left": label_w, "plot_right": label_w + plot_w,
        "axis_y": top - 8, "grid_bottom": height - 12, "ticks": ticks, "groups": groups,
        "maximum_seconds": maximum,
        "legend": [{"css": css, "label": legend, "x": label_w + i * 130} for i, (_, css, legend) in enumerate(BARS)],
    }


def _worker_view(worker):
    loaded = worker.get("loaded") or {}
    details = []
    for key, label in [("device", None), ("dtype", None), ("vae_dtype", "VAE"), ("ip_adapter", "IP-Adapter"),
                       ("enhancer", "enhancer"), ("i2v", "image-to-video")]:
        value = loaded.get(key)
        if key == "ip_adapter" and value:  # "<folder>/<weights file>": the folder names it
            value = PurePath(value).parent.name or value
        if value:
            details.append(f"{label} {value}" if label else str(value))
    if loaded.get("compiled"):
        details.append("compiled")
    elif "compiled" in loaded:
        details.append("not compiled")
    if loaded.get("enhancer_offloaded"):
        details.append("enhancer offloaded")
    if loaded.get("vram_bytes"):
        details.append(f"{loaded['vram_bytes'] / 2**30:.1f} GiB VRAM")
    running = worker.get("running_job")
    return {
        "name": worker.get("name", "?"),
        "model": loaded.get("model"),
        "details": details,
        "reference_types": loaded.get("reference_types") or [],
        "loaded": bool(loaded),
        "completed": worker.get("completed", 0),
        "failed": worker.get("failed", 0),
        "running_job": running,
        "running_url": reverse("admin:generation_job_change", args=[running]) if running else None,
    }


def overview():
    """Everything the Dashboard shows, display strings included."""
    queues_error = None
    try:
        stats = queues.queue_stats(STATS_WINDOW)
    except redis.RedisError as exc:  # the broker is down: say so and show the rest
        log.warning("dashboard: no queue figures (%s)", exc)
        stats, queues_error = [], f"The broker could not be reached: {exc}"
    rows = []
    for q in stats:
        rows.append({
            **q,
            "workers": [_worker_view(w) for w in q["workers"]],
            "average_wait": format_seconds(q["average_wait_seconds"]),
            "jobs_per_hour_text": format_count(q["jobs_per_hour"]),
            "error_rate_text": format_rate(q["error_rate"]),
            "oldest_waiting": format_seconds(q["oldest_waiting_seconds"]),
        })
    total = totals(STATS_WINDOW)
    timings = timings_by_type(TIMING_WINDOW)
    return {
        "queues": rows,
        "queues_error": queues_error,
        "totals": {
            **total,
            "jobs_per_hour_text": format_count(total["jobs_per_hour"]),
            "error_rate_text": format_rate(total["error_rate"]),
            "average_wait": format_seconds(total["average_wait_seconds"]),
            "workers_online": len({w["name"] for q in rows for w in q["workers"]}),
            "backlog": sum(q["queued_jobs"] for q in rows),
            "processing": sum(q["processing_jobs"] for q in rows),
        },
        "timings": timings,
        "chart": timing_chart(timings),
        "failures": latest_failures(FAILURES_SHOWN),
        "stats_window_hours": STATS_WINDOW / timedelta(hours=1),
        "timing_window_hours": TIMING_WINDOW / timedelta(hours=1),
    }


# --- view ------------------------------------------------------------------------------------

def _is_staff(user):
    """Anonymous users go to the login page; signed-in users who are not staff get a 403."""
    if user.is_authenticated and not (user.is_active and user.is_staff):
        raise PermissionDenied("The dashboard is for staff.")
    return user.is_authenticated


@user_passes_test(_is_staff)
def dashboard(request):
    """Queue and worker figures for staff."""
    return render(request, "dashboard.html", {
        "section": "dashboard",
        "flower_url": settings.FLOWER_URL,
        "refresh_seconds": REFRESH_SECONDS,
        "now": timezone.now(),
        **overview(),
    })
