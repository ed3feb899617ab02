"""The WAN pool's Celery task. Only workers started with `--include wan_tasks.tasks` import it."""

from celery import shared_task

# heartbeats and node are imported for their signal handlers, which publish this worker's presence, refuse a node
# name a live worker holds and give it its share of the host's CPU threads.
from generation.worker import heartbeats, node, pipelines, runtime  # noqa: F401

from . import pipeline


@shared_task(name="wan.generate")
def generate(job_id, release=0):
    """Render one WAN job (an image or a video) and record the outcome on the job."""
    runtime.run(job_id, "wan", pipeline.generate, release)


# A wrong model path stops the worker at start, with a message naming the variable.
check_models = pipelines.check_at_start("wan", pipeline.check_models)
# Loading the pipeline also loads and places the enhancer beside it.
load_models = pipelines.load_at_start("wan", pipeline.get_pipeline)
