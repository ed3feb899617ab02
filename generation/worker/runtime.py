"""The part of running a job that both worker pools share.

A pool's task calls `run(job_id, pool, generate)`. `generate(run)` renders and returns a list of
`Output`; everything around it (mark processing, progress, cancellation, storage, thumbnails,
timings, the completion or failure signal) happens here, once.
"""

import contextvars
import logging
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from celery.exceptions import Reject, SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, JSONField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now

from ourvidz import tracing

from .. import events, storage, webhooks
from ..metadata import JobMetadata
from ..models import Job, JobPhase, JobStatus, WebhookEvent
from ..signals import StoredOutput, job_completed, job_failed
from . import heartbeats, images

# What a database that cannot be reached (stopped, restarting, a network cut) raises.
DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_RECHECK_SECONDS = 5.0  # while rendering, how often to try an unreachable database again

log = logging.getLogger(__name__)

# The job this process is running, for its log lines (job_logging).
_current_job = contextvars.ContextVar("ourvidz_job", default=None)


def _job_records(factory):
    """A log record factory: while a job runs, every record of the process (ours, the pipelines', torch's)
    starts with "[job <id>]", so that a worker's log tells which job a line is about."""
    def make(*args, **kwargs):
        record = factory(*args, **kwargs)
        job_id = _current_job.get()
        if job_id is not None:
            record.job_id = job_id
            record.msg = f"[job {job_id}] {record.msg}"
        return record
    return make


logging.setLogRecordFactory(_job_records(logging.getLogRecordFactory()))


@contextmanager
def job_logging(job_id):
    """Log lines written inside the block name job `job_id`."""
    token = _current_job.set(str(job_id))
    try:
        yield
    finally:
        _current_job.reset(token)


def attempt_recorded():
    """Job.metadata with this start appended to its "attempts" (generation.metadata.Attempt): the worker's node
    name and host, and the database's time, so that a job tells which hosts ran it."""
    return RawSQL("""jsonb_set(COALESCE(metadata, '{}'::jsonb), '{attempts}',
                                COALESCE(metadata->'attempts', '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                                    'worker', %s::text, 'host', %s::text, 'started_at', STATEMENT_TIMESTAMP())))""",
                  [heartbeats.status["name"], socket.gethostname()], output_field=JSONField())


# JobRun.timed blocks that are phases of a job, as its owner sees them (the steps, and the decoding after
# the last one, are reported by the step callback).
PHASES = {"load": JobPhase.LOADING, "enhance": JobPhase.ENHANCING, "encode": JobPhase.ENCODING,
          "store": JobPhase.SAVING}


class JobCancelled(Exception):
    """Raised from a step callback when the user cancelled the running job."""


class JobError(Exception):
    """A failure whose message is meant for the user (bad parameters, out of memory...). `refund`: False
    when it was the user's doing (they deleted the reference, say): their credits are kept."""

    def __init__(self, message, refund=True):
        super().__init__(message)
        self.refund = refund


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
        self.phase = JobPhase.LOADING  # as the start wrote it
        self._steps_started_at = time.perf_counter()  # reset as the pipeline call starts (timed_steps)
        self._first_step = None  # (step, its perf_counter, its seconds): step times count from it
        self.reported = (0, 0)  # the last step reported, of how many
        self._last_write = 0.0
        self._last_preview = None  # monotonic time of the last preview sent
        self._database_back_at = 0.0  # after a failed check, the next waits until then

    def step(self, step, total):
        """Report step `step` of `total`; raises JobCancelled if the job was cancelled meanwhile, or taken
        back from this worker (its heartbeat was lost) and released again. With the database unreachable
        the render goes on: progress and the cancel check wait for its return."""
        self.last_step_at = time.perf_counter()
        self.reported = (step, total)
        now = time.monotonic()
        if self._first_step is None:
            # The first step's time includes the text encoders': count from the end of the first step.
            self._first_step = (step, self.last_step_at, self.last_step_at - self._steps_started_at)
        # After the last step the pipeline decodes the latents.
        self.phase = JobPhase.DECODING if step >= total else JobPhase.STEPS
        if now < self._database_back_at:
            return
        try:
            row = Job.objects.filter(pk=self.job.pk).values_list("status", "releases").first()
            status, releases = row or ("deleted", None)
            if status != JobStatus.PROCESSING or releases != self.job.releases:
                raise JobCancelled(f"job {self.job.pk} is {status}, release {releases} (this run's: "
                                   f"{self.job.releases})")
            if step >= total or now - self._last_write >= settings.PROGRESS_INTERVAL:
                self._last_write = now
                with transaction.atomic():
                    if Job.objects.filter(pk=self.job.pk, status=JobStatus.PROCESSING).update(
                            current_step=step, total_steps=total, progress=round(step / total, 4) if total else 0,
                            phase=self.phase, step_seconds=self.step_seconds(step)):
                        webhooks.queue(self.job, WebhookEvent.PROGRESS)
                events.publish_on_commit(self.job)
        except DATABASE_ERRORS as exc:
            log.warning("job %s: no progress written at step %s/%s, the database is unavailable (%s)",
                        self.job.pk, step, total, exc)
            connection.close()
            # Each try may wait for a connection timeout: a slow step is worse than a stale progress bar.
            self._database_back_at = time.monotonic() + DATABASE_RECHECK_SECONDS

    def step_seconds(self, step):
        """Seconds per step so far: the mean after the first step (whose time includes text encoding),
        the first's own until there is a second."""
        first_step, first_at, first_seconds = self._first_step
        if step > first_step:
            return round((self.last_step_at - first_at) / (step - first_step), 4)
        return round(first_seconds / max(first_step, 1), 4)

    def preview(self, latents, previewer):
        """Send a picture of `latents` to the owner's open pages: the first step's, then at most one every
        PREVIEW_INTERVAL seconds, and the last step's. A preview that cannot be made or sent costs only the picture."""
        now = time.monotonic()
        recent = self._last_preview is not None and now - self._last_preview < settings.PREVIEW_INTERVAL
        if recent and self.phase != JobPhase.DECODING:
            return
        self._last_preview = now
        try:
            with tracing.span("preview"):
                events.publish_preview(self.job, previewer(latents), *self.reported)
        except Exception:
            log.warning("job %s: no preview sent", self.job.pk, exc_info=True)

    def enter(self, phase):
        """Record that the job moved to `phase` (a JobPhase), and tell its owner's pages."""
        if phase == self.phase:
            return
        self.phase = phase
        try:
            if Job.objects.filter(pk=self.job.pk, status=JobStatus.PROCESSING).update(phase=phase):
                events.publish_on_commit(self.job)
        except DATABASE_ERRORS as exc:  # the phase is shown, not needed: the render goes on
            log.warning("job %s: phase %s not written, the database is unavailable (%s)", self.job.pk, phase, exc)
            connection.close()

    @contextmanager
    def timed(self, phase):
        """Add the time spent in the block to timings[phase] (and trace it as a span, when tracing); a
        block that is one of the job's phases (PHASES) is recorded as it starts."""
        if phase in PHASES:
            self.enter(PHASES[phase])
        start = time.perf_counter()
        try:
            with tracing.span(phase):
                yield
        finally:
            self._add(phase, time.perf_counter() - start)

    @contextmanager
    def timed_steps(self, steps_phase, tail_phase):
        """Time a pipeline call in two parts, split at its last reported step: the steps (text
        encoding included), then what follows them (the VAE decode)."""
        self.enter(JobPhase.STEPS)  # the call encodes the prompt, then steps: the model is loaded
        started_ns = time.time_ns()
        start = self.last_step_at = self._steps_started_at = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            split = max(start, min(self.last_step_at, end))
            self._add(steps_phase, split - start)
            self._add(tail_phase, end - split)
            # The split is known only now: the two spans are recorded after the fact.
            split_ns = started_ns + round((split - start) * 1e9)
            tracing.record(steps_phase, started_ns, split_ns)
            tracing.record(tail_phase, split_ns, started_ns + round((end - start) * 1e9))

    def _add(self, phase, seconds):
        self.timings[phase] = round(self.timings.get(phase, 0.0) + seconds, 4)


def with_database(action, what, patience=None):
    """`action()`, tried again with growing pauses while the database cannot be reached (the broken
    connection is dropped each time); after `patience` seconds (None: for as long as it takes) the
    error is raised."""
    deadline = None if patience is None else time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            return action()
        except DATABASE_ERRORS as exc:
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            if pause <= 0:
                raise
            log.warning("the database is unavailable while %s (%s); trying again in %.1f s", what, exc, pause)
            connection.close()
            try:
                time.sleep(pause)
            except SoftTimeLimitExceeded:
                # Results are stored and wait to be recorded: keep trying. The hard limit ends the
                # process if need be, and the task, acknowledged late, is then run again.
                log.warning("the soft time limit passed while %s; still waiting for the database", what)
            delay = min(delay * 2, 30.0)


def run(job_id, pool, generate, release=0):
    """Run one job through `generate` (its log lines name it); the job always ends completed, failed or
    cancelled. `release`: the scheduler's number of the message that brought the task (0: sent before the
    scheduler existed, or a direct call); a message of an earlier release (the job was sent again after its
    message seemed lost) starts nothing.

    While the database cannot be reached the worker waits (taking no other task); after
    DATABASE_WAIT_SECONDS the task goes back on its queue, never acknowledged as done. Results that
    cannot be written are written once the database is back (the files are stored already); a render
    that needed the database goes back to the scheduler once it is back."""
    with job_logging(job_id):
        _run(job_id, pool, generate, release)


def _run(job_id, pool, generate, release):
    def start():
        with transaction.atomic():
            # Times from the database's clock (generation.clock): another host judges them.
            moved = Job.move(job_id, JobStatus.PROCESSING, only_if={"releases": release},
                             worker=heartbeats.identity(), started_at=Now(), attempts=F("attempts") + 1,
                             metadata=attempt_recorded(), progress=0, current_step=0, error_message="",
                             phase=JobPhase.LOADING, step_seconds=None)
            if moved:  # its start webhook, recorded with the move
                webhooks.queue(Job.objects.get(pk=job_id), WebhookEvent.START)
            return moved

    try:
        moved = with_database(start, f"starting job {job_id}", patience=settings.DATABASE_WAIT_SECONDS)
    except DATABASE_ERRORS as exc:
        raise Reject(f"the database is unavailable: {exc}", requeue=True) from exc
    if not moved:
        log.info("job %s is not runnable (cancelled, finished or released again); skipped", job_id)
        return
    job = with_database(lambda: Job.objects.get(pk=job_id), f"reading job {job_id}")
    tracing.annotate({"ourvidz.job.id": str(job.pk), "ourvidz.job.type": job.job_type})
    events.publish_on_commit(job)
    if job.attempts > settings.JOB_MAX_ATTEMPTS:
        deaths = job.attempts - 1
        error = (f"The job was stopped {deaths} times by its worker dying while it ran (a crash, or running out of "
                 "memory); it is not tried again.")
        with_database(lambda: job_failed.send(sender=pool, job=job, error=error, metadata={"worker_deaths": deaths},
                                              fields={}), f"failing job {job_id}")
        return
    job_run = JobRun(job)
    stored = []
    try:
        with job_run.timed("generate"):
            outputs = generate(job_run)
        with job_run.timed("store"):
            stored = [store(job, output) for output in outputs]
    except JobCancelled as exc:
        log.info("job %s stopped while running: %s", job_id, exc)
        return
    except DATABASE_ERRORS as exc:  # read while rendering (a reference image, say): run it again later
        log.warning("job %s: the database went away while rendering (%s); the job waits again once it is back",
                    job_id, exc)
        # Back to the scheduler through the database, not the broker: this start is not counted as one that
        # killed its worker (JOB_MAX_ATTEMPTS), and the message is done with.
        with_database(lambda: Job.move(job_id, JobStatus.QUEUED, only_if={"releases": release}, released_at=None,
                                       worker="", progress=0, current_step=0, step_seconds=None,
                                       attempts=F("attempts") - 1),
                      f"putting job {job_id} back in the queue")
        return
    except Exception as exc:
        log.exception("job %s failed", job_id)
        job_run.metadata["timings"] = job_run.timings
        error = error_message(exc, job)
        refund = getattr(exc, "refund", True)
        job_run.fields["gpu_seconds"] = job_run.timings.get("generate")
        with_database(lambda: job_failed.send(sender=pool, job=job, error=error, metadata=job_run.metadata,
                                              fields=job_run.fields, refund=refund),
                      f"recording the failure of job {job_id}")
        return
    job_run.metadata["timings"] = job_run.timings
    job_run.fields["gpu_seconds"] = job_run.timings.get("generate")
    # One line per run that got to the end: a job rendered twice shows up twice (tests/faults.py counts them).
    log.info("job %s rendered: %d file(s) stored in %.1f s", job_id, len(stored), sum(job_run.timings.values()))
    with_database(lambda: job_completed.send(sender=pool, job=job, outputs=stored, metadata=job_run.metadata,
                                             fields=job_run.fields), f"recording the results of job {job_id}")
    if with_database(lambda: Job.objects.filter(pk=job_id, status=JobStatus.CANCELLED).exists(), "checking"):
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
