"""The Celery application shared by the web tier (which only sends by task name) and the workers."""

import os

from celery import Celery, signals

from ourvidz import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ourvidz.settings")
# Set before a worker imports diffusers/transformers: models come from local folders only, and
# download-style progress bars would only clutter worker logs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

app = Celery("ourvidz")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Finds generation.tasks (housekeeping). The pools' tasks are imported only by their own
# workers (`celery worker --include sdxl_tasks.tasks`), so no process loads both pipelines.
app.autodiscover_tasks()


@signals.worker_init.connect(weak=False)
def _check_installation(sender, **kwargs):
    """Every worker (the pools', housekeeping, webhooks) starts only with the installation's settings and storage
    (generation.installation); otherwise it stops, naming the variable, with exit status 1."""
    from django.db import connections

    from generation import installation

    try:
        installation.check_worker(sender.hostname)
    except Exception as exc:  # Celery would log any other exception from a signal handler and start anyway
        raise SystemExit(f"worker {sender.hostname} not started: {exc}") from exc
    finally:
        connections.close_all()  # opened in the main process: the pool processes it forks open their own


# Tracing (ourvidz.tracing) starts in each pool process, after the fork: the exporter's thread and connection
# must belong to the process that runs the tasks.
@signals.worker_process_init.connect(weak=False)
def _start_tracing(**kwargs):
    tracing.setup("ourvidz-worker")


@signals.worker_process_shutdown.connect(weak=False)
def _stop_tracing(**kwargs):
    tracing.stop()
