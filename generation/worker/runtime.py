"""The part of running a job that both worker pools share.

A pool's task calls `run(job_id, pool, generate)`. `generate(run)` renders and returns a list of
`Output`; everything around it (mark processing, progress, cancellation, storage, thumbnails,
timings, the completion or failure signal) happens here, once.
"""

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .. import events, storage
from ..metadata import JobMetadata
from ..models import Job, JobStatus
from ..signals import StoredOutput, job_completed, job_failed
from . import images

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised from a step callback when the user cancelled the running job."""


class JobError(Exception):
    """A failure whose message is meant for the user (bad parameters, out of memory...)."""


@dataclass
class Output:
    """One rendered file: encoded bytes plus a picture for its thumbnail."""

    data: bytes
    extension: str  # "png" or "mp4"
    preview: object  # PIL image
    width: int
    height: int
    index: int = 0
    metadata: dict = field(default_factory=dict)  # generation.metadata.AssetMetadata


class JobRun:
    """What a pool's `generate` gets: the job, a step callback, and places to record results."""

    def __init__(self, job):
        self.job = job
        self.metadata: JobMetadata = {}  # merged into Job.metadata
        self.fields = {}  # other Job columns to save at the end, e.g. enhanced_prompt
        self.timings = {}  # seconds per phase
        self.last_step_at = 0.0
        self._last_write = 0.0

    def step(self, step, total):
        """Report step `step` of `total`; raises JobCancelled if the job was cancelled meanwhile."""
        self.last_step_at = time.perf_counter()
        status = Job.objects.filter(pk=self.job.pk).values_list("status", flat=True).first()
        if status != JobStatus.PROCESSING:
            raise JobCancelled(f"job {self.job.pk} is {status}")
        now = time.monotonic()
        if step >= total or now - self._last_write >= settings.PROGRESS_INTERVAL:
            self._last_write = now
            Job.objects.filter(pk=self.job.pk, status=JobStatus.PROCESSING).update(
                current_step=step, total_steps=total, progress=round(step / total, 4) if total else 0
            )
            events.publish_on_commit(self.job)

    @contextmanager
    def timed(self, phase):
        """Add the time spent in the block to timings[phase]."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._add(phase, time.perf_counter() - start)

    @contextmanager
    def timed_steps(self, steps_phase, tail_phase):
        """Time a pipeline call in two parts, split at its last reported step: the steps (text
        encoding included), then what follows them (the VAE decode)."""
        start = self.last_step_at = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            split = max(start, min(self.last_step_at, end))
            self._add(steps_phase, split - start)
            self._add(tail_phase, end - split)

    def _add(self, phase, seconds):
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 4)


def run(job_id, pool, generate, release=0):
    """Run one job through `generate`; the job always ends completed, failed or cancelled. `release`:
    the scheduler's number of the message that brought the task (0: sent before the scheduler existed,
    or a direct call); a message of an earlier release (the job was sent again after its message seemed
    lost) starts nothing."""
    if not Job.move(job_id, JobStatus.PROCESSING, only_if={"releases": release}, started_at=timezone.now(),
                    attempts=F("attempts") + 1, progress=0, current_step=0, error_message=""):
        log.info("job %s is not runnable (cancelled, finished or released again); skipped", job_id)
        return
    job = Job.objects.get(pk=job_id)
    events.publish_on_commit(job)
    job_run = JobRun(job)
    stored = []
    try:
        with job_run.timed("generate"):
            outputs = generate(job_run)
        with job_run.timed("store"):
            stored = [store(job, output) for output in outputs]
    except JobCancelled:
        log.info("job %s cancelled while running", job_id)
        return
    except Exception as exc:
        log.exception("job %s failed", job_id)
        job_run.metadata["timings"] = job_run.timings
        job_failed.send(sender=pool, job=job, error=error_message(exc, job),
                        metadata=job_run.metadata, fields=job_run.fields)
        return
    job_run.metadata["timings"] = job_run.timings
    job_completed.send(sender=pool, job=job, outputs=stored, metadata=job_run.metadata,
                       fields=job_run.fields)
    if Job.objects.filter(pk=job_id, status=JobStatus.CANCELLED).exists():
        discard(stored)  # cancelled between the last step and now: keep nothing


def error_message(exc, job):
    """The text a user sees for a failure."""
    if isinstance(exc, JobError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"The job ran past its time limit of {job.type.time_limit(job.num_images)} seconds."
    return f"Generation failed: {type(exc).__name__}: {exc}"


def store(job, output):
    """Write one output and its thumbnail to the job type's bucket under a deterministic name."""
    bucket = job.type.bucket
    if output.extension == "mp4":
        kind, name = "video", storage.video_name(job.user_id, job.pk)
    else:
        kind, name = "image", storage.image_name(job.user_id, job.pk, output.index)
    thumb = storage.thumbnail_name(name)
    backend = storage.get_storage()
    backend.put(bucket, name, output.data)
    backend.put(bucket, thumb, images.encode_thumbnail(output.preview))
    return StoredOutput(kind, output.index, bucket, name, thumb, output.width, output.height,
                        len(output.data), output.metadata)


def discard(stored):
    backend = storage.get_storage()
    for item in stored:
        backend.delete(item.bucket, item.path)
        backend.delete(item.bucket, item.thumbnail_path)
