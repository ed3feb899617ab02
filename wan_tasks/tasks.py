"""The WAN pool's Celery task. Only workers started with `--include wan_tasks.tasks` import it."""

import logging

import diffusers
from celery import shared_task, signals
from django.conf import settings

# generation.workers is imported for its signal handlers, which publish this worker's heartbeat.
from generation import runtime, workers  # noqa: F401

from . import enhancer, pipeline

log = logging.getLogger(__name__)


@shared_task(name="wan.generate")
def generate(job_id):
    """Render one WAN job (an image or a video) and record the outcome on the job."""
    runtime.run(job_id, "wan", pipeline.generate)


@signals.worker_process_init.connect
def load_models(**kwargs):
    """Load the enhancer and pipeline as the pool process starts, so the first job does not pay."""
    # Load-time progress bars, one per component, would only flood the worker log.
    diffusers.utils.logging.disable_progress_bar()
    try:
        # The enhancer first, so that the memory figure the pipeline publishes covers both.
        enhancer.get_enhancer()
        pipeline.get_pipeline()
    except Exception:
        log.exception("could not load the WAN models from %s and %s", settings.WAN_MODEL_PATH,
                      settings.ENHANCER_MODEL_PATH)
        raise
