"""The SDXL pool's Celery task. Only workers started with `--include sdxl_tasks.tasks` import it."""

from celery import shared_task

# generation.workers is imported for its signal handlers, which publish this worker's heartbeat.
from generation import pipelines, runtime, workers  # noqa: F401

from . import pipeline


@shared_task(name="sdxl.generate")
def generate(job_id):
    """Render one SDXL job (all of its images) and record the outcome on the job."""
    runtime.run(job_id, "sdxl", pipeline.generate)


load_pipeline = pipelines.load_at_start("sdxl", pipeline.load)
