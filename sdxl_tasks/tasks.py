"""The SDXL pool's Celery task. Only workers started with `--include sdxl_tasks.tasks` import it."""

import logging

import diffusers
from celery import shared_task, signals
from django.conf import settings

# generation.workers is imported for its signal handlers, which publish this worker's heartbeat.
from generation import runtime, workers  # noqa: F401

from . import pipeline

log = logging.getLogger(__name__)


@shared_task(name="sdxl.generate")
def generate(job_id):
    """Render one SDXL job (all of its images) and record the outcome on the job."""
    runtime.run(job_id, "sdxl", pipeline.generate)


@signals.worker_process_init.connect
def load_pipeline(**kwargs):
    """Load the pipeline as the pool process starts, so the first job does not pay for it."""
    # Load-time progress bars, one per component, would only flood the worker log.
    diffusers.utils.logging.disable_progress_bar()
    try:
        pipeline.load()
    except Exception:
        log.exception("could not load the SDXL pipeline from %s", settings.SDXL_MODEL_PATH)
        raise
