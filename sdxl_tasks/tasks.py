"""The SDXL pool's Celery task. Only workers started with `--include sdxl_tasks.tasks` import it."""

from celery import shared_task
from django.conf import settings

# heartbeats and node are imported for their signal handlers, which publish this worker's presence, refuse a node
# name a live worker holds and give it its share of the host's CPU threads.
from generation.worker import heartbeats, node, pipelines, runtime  # noqa: F401

from . import loading, pipeline


@shared_task(name="sdxl.generate")
def generate(job_id, release=0):
    """Render one SDXL job (all of its images) and record the outcome on the job."""
    runtime.run(job_id, "sdxl", pipeline.generate, release)


# A wrong model path stops the worker at start, with a message naming the variable.
check_model = pipelines.check_at_start(
    "sdxl", lambda: loading.check_model(settings.SDXL_MODEL_PATH, settings.SDXL_CONFIG_PATH))
load_pipeline = pipelines.load_at_start("sdxl", pipeline.load)
