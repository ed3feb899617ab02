"""The WAN pool's Celery task. Only workers started with `--include wan_tasks.tasks` import it."""

from celery import shared_task

# heartbeats is imported for its signal handlers, which publish this worker's presence.
from generation.worker import heartbeats, pipelines, runtime  # noqa: F401

from . import pipeline


@shared_task(name="wan.generate")
def generate(job_id, release=0):
    """Render one WAN job (an image or a video) and record the outcome on the job."""
    runtime.run(job_id, "wan", pipeline.generate, release)


# A wrong model path stops the worker at start, with a message naming the variable.
check_models = pipelines.check_at_start("wan", pipeline.check_models)
# Loading the pipeline also loads and places the enhancer beside it.
load_models = pipelines.load_at_start("wan", pipeline.get_pipeline)
