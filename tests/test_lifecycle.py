"""The shared job runtime, signal receivers and housekeeping, with plain `generate` functions."""

from datetime import timedelta

import pytest
from django.utils import timezone
from PIL import Image as PILImage

from generation import storage, submission, tasks
from generation.models import Image, Job, JobStatus
from generation.worker import images, runtime


def make_job(user, job_type="sdxl_image_fast", **kwargs):
    job = submission.build_job(user, job_type, "a prompt", **kwargs)
    job.save()
    return job


def render(colors):
    """A `generate` that renders one flat image per colour, reporting each as a step."""
    def generate(run):
        outputs = []
        for i, color in enumerate(colors):
            run.step(i + 1, len(colors))
            picture = PILImage.new("RGB", (run.job.width, run.job.height), color)
            outputs.append(runtime.Output(images.encode_png(picture, "p"), "png", picture, picture.width,
                                          picture.height, index=i, metadata={"seed": run.job.seed + i}))
        run.metadata["sampler"] = "test"
        return outputs
    return generate


def test_completed_job_gets_rows_files_and_timings(alice):
    job = make_job(alice, num_images=3, seed=10)
    runtime.run(job.pk, "sdxl", render(["red", "green", "blue"]))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.progress == 1.0 and job.attempts == 1
    assert job.started_at <= job.completed_at
    assert set(job.metadata["timings"]) == {"generate", "store"} and job.metadata["sampler"] == "test"
    rows = list(job.images.order_by("image_index"))
    assert [(r.image_index, r.seed, r.image_path) for r in rows] == [
        (i, 10 + i, f"{alice.pk}/{job.pk}_{i}.png") for i in range(3)]
    backend = storage.get_storage()
    assert all(backend.exists("sdxl-image-fast", r.image_path) for r in rows)
    assert all(backend.exists("sdxl-image-fast", r.thumbnail_path) for r in rows)


def test_rerun_of_a_redelivered_task_overwrites_instead_of_duplicating(alice):
    job = make_job(alice, num_images=3)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)  # its first worker died mid-job
    runtime.run(job.pk, "sdxl", render(["red", "green", "blue"]))
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and Image.objects.filter(job=job).count() == 3
    # A duplicate delivery after completion does nothing.
    runtime.run(job.pk, "sdxl", render(["black"]))
    assert Image.objects.filter(job=job).count() == 3


def test_exception_in_generate_fails_the_job_readably(alice):
    job = make_job(alice)

    def broken(run):
        run.metadata["reached"] = True
        raise RuntimeError("CUDA error: device-side assert triggered")

    runtime.run(job.pk, "sdxl", broken)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.completed_at
    assert job.error_message == "Generation failed: RuntimeError: CUDA error: device-side assert triggered"
    assert job.metadata["reached"] is True and "generate" in job.metadata["timings"]


def test_job_error_message_is_shown_as_is(alice):
    job = make_job(alice)

    def refuse(run):
        raise runtime.JobError("The image came out black (NaN values); nothing was stored.")

    runtime.run(job.pk, "sdxl", refuse)
    job.refresh_from_db()
    assert job.error_message == "The image came out black (NaN values); nothing was stored."


def test_cancel_while_running_stops_at_the_next_step(alice):
    job = make_job(alice, num_images=3)
    steps = []

    def generate(run):
        for i in range(10):
            run.step(i + 1, 10)
            steps.append(i)
            if i == 1:
                submission.cancel(run.job)
        return []

    runtime.run(job.pk, "sdxl", generate)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and steps == [0, 1]
    assert not Image.objects.filter(job=job).exists()


def test_cancelled_queued_job_is_skipped(alice):
    job = make_job(alice)
    submission.cancel(job)
    called = []
    runtime.run(job.pk, "sdxl", lambda run: called.append(1) or [])
    assert called == [] and Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_progress_is_written_while_running(alice, settings):
    settings.PROGRESS_INTERVAL = 0
    job = make_job(alice)
    seen = []

    def generate(run):
        for i in range(4):
            run.step(i + 1, 4)
            seen.append(Job.objects.values_list("current_step", "total_steps", "progress").get(pk=job.pk))
        return []

    runtime.run(job.pk, "sdxl", generate)
    assert seen == [(1, 4, 0.25), (2, 4, 0.5), (3, 4, 0.75), (4, 4, 1.0)]


def test_stalled_processing_jobs_are_failed_by_housekeeping(alice):
    stuck = make_job(alice)
    fresh = make_job(alice)
    long_ago = timezone.now() - timedelta(seconds=stuck.type.hard_time_limit() + tasks.GRACE_SECONDS + 5)
    Job.objects.filter(pk=stuck.pk).update(status=JobStatus.PROCESSING, started_at=long_ago)
    Job.objects.filter(pk=fresh.pk).update(status=JobStatus.PROCESSING, started_at=timezone.now())
    assert tasks.fail_stalled_jobs() == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert stuck.status == JobStatus.FAILED
    assert stuck.error_message == (f"The job ran far past its time limit of {stuck.type.time_limit()} seconds "
                                   "without ending; it was stopped.")
    assert fresh.status == JobStatus.PROCESSING


def test_retry_creates_a_new_job_pointing_back(alice, django_capture_on_commit_callbacks):
    job = make_job(alice, num_images=3, seed=99, negative_prompt="blurry")
    Job.move(job.pk, JobStatus.FAILED, error_message="boom")
    with django_capture_on_commit_callbacks(execute=True) as sent:
        new = submission.retry(Job.objects.get(pk=job.pk))
    assert new.pk != job.pk and new.retry_of_id == job.pk and new.status == JobStatus.QUEUED
    assert (new.seed, new.num_images, new.negative_prompt) == (99, 3, job.negative_prompt)
    assert len(sent) == 2  # the scheduler's kick and the event for the user's open pages


def test_time_limits_come_from_the_table(settings):
    from generation import job_types

    settings.JOB_TIME_LIMIT_FACTOR = 10
    settings.JOB_TIME_LIMIT_FLOOR = 300
    assert job_types.get("video_high").time_limit() == 1800
    assert job_types.get("sdxl_image_fast").time_limit(6) == 300
    assert job_types.get("sdxl_image_high").time_limit(6) == 480
    assert job_types.get("video7b_high_enhanced").hard_time_limit() == 2460


def test_celery_is_configured_for_long_gpu_jobs():
    from generation import job_types
    from ourvidz.celery import app

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost  # a lost worker's job is redelivered
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_send_task_events
    assert conf.broker_transport_options["visibility_timeout"] > job_types.max_hard_time_limit()


def test_visibility_timeout_shorter_than_a_job_is_refused(settings):
    from generation import checks

    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
    errors = checks.visibility_timeout(None)
    assert [e.id for e in errors] == ["ourvidz.E001"]


class DatabaseOutage:
    """The database going away for real (this process's connection points at a port nothing listens on)
    and coming back after `seconds`, from another thread."""

    def __init__(self):
        from django.db import connection

        self.connection = connection
        self.port = connection.settings_dict["PORT"]

    def begin(self):
        self.connection.close()
        self.connection.settings_dict["PORT"] = "9"

    def end_after(self, seconds):
        import threading

        timer = threading.Timer(seconds, lambda: self.connection.settings_dict.__setitem__("PORT", self.port))
        timer.start()
        return timer

    def end(self):
        self.connection.close()
        self.connection.settings_dict["PORT"] = self.port


@pytest.mark.django_db(transaction=True)
def test_a_worker_puts_the_task_back_when_the_database_stays_away(alice, settings):
    from celery.exceptions import Reject

    job = make_job(alice)
    settings.DATABASE_WAIT_SECONDS = 1
    outage = DatabaseOutage()
    outage.begin()
    try:
        with pytest.raises(Reject) as rejected:
            runtime.run(job.pk, "sdxl", render(["red"]))
    finally:
        outage.end()
    assert rejected.value.requeue  # back on its queue, not acknowledged as done
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_results_are_written_once_the_database_is_back(alice):
    job = make_job(alice, num_images=2)
    outage = DatabaseOutage()
    timers = []

    def generate(run):
        outputs = render(["red", "green"])(run)
        outage.begin()  # the database goes away after the render, before the results are written ...
        timers.append(outage.end_after(1.5))  # ... and comes back
        return outputs

    try:
        runtime.run(job.pk, "sdxl", generate)
    finally:
        for timer in timers:
            timer.join()
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and Image.objects.filter(job=job).count() == 2
    assert all(storage.get_storage().exists(image.bucket, image.image_path) for image in job.images.all())


def test_a_run_whose_job_was_taken_back_and_sent_again_stops_and_records_nothing(alice):
    """Its worker was thought gone: the job went back to the scheduler and out again as release 2."""
    job = make_job(alice)
    Job.objects.filter(pk=job.pk).update(releases=1)
    steps = []

    def generate(run):
        for i in range(5):
            run.step(i + 1, 5)
            steps.append(i)
            if i == 1:
                Job.objects.filter(pk=job.pk).update(releases=2)  # recovered, released again, started elsewhere
        return render(["red"])(run)

    runtime.run(job.pk, "sdxl", generate, release=1)
    job.refresh_from_db()
    assert steps == [0, 1] and job.status == JobStatus.PROCESSING and not job.images.exists()


def test_only_the_current_release_records_an_outcome(alice):
    from generation import outcomes

    job = make_job(alice)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING, releases=2)
    assert not outcomes.record_completion(job.pk, [], {}, {}, release=1)
    assert not outcomes.record_failure(job.pk, "a stale run failed", {}, {}, release=1)
    assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING
    assert outcomes.record_failure(job.pk, "the current run failed", {}, {}, release=2)
    assert Job.objects.get(pk=job.pk).error_message == "the current run failed"


@pytest.mark.django_db(transaction=True)
def test_waiting_for_the_database_lasts_the_patience_given(caplog):
    from django.db import OperationalError

    def action():
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError):
        runtime.with_database(action, "testing", patience=1.2)
    pauses = [float(r.getMessage().rsplit("trying again in ", 1)[1].split()[0]) for r in caplog.records
              if "trying again in" in r.getMessage()]
    assert pauses[0] == 0.5 and 1.1 <= sum(pauses) <= 1.2  # the last pause is what was left, not skipped


@pytest.mark.django_db(transaction=True)
def test_a_render_checks_an_unreachable_database_again_only_every_few_seconds(alice, caplog):
    job = make_job(alice)
    outage = DatabaseOutage()

    def generate(run):
        outage.begin()
        try:
            for i in range(20):
                run.step(i + 1, 20)
        finally:
            outage.end()
        return render(["red"])(run)

    runtime.run(job.pk, "sdxl", generate)
    missed = [r for r in caplog.records if "no progress written" in r.getMessage()]
    assert len(missed) == 1  # one failed check, then the render went on without waiting on connections
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_render_that_loses_the_database_sends_its_job_back_without_counting_a_worker_death(alice):
    job = make_job(alice)
    Job.objects.filter(pk=job.pk).update(releases=1, released_at=timezone.now())
    outage = DatabaseOutage()
    timers = []

    def generate(run):
        outage.begin()
        timers.append(outage.end_after(1.5))
        Job.objects.get(pk=run.job.pk)  # a read the render needs (its reference picture, say)
        pytest.fail("the database was down")

    try:
        runtime.run(job.pk, "sdxl", generate, release=1)  # returns: the message is done with
    finally:
        for timer in timers:
            timer.join()
    job.refresh_from_db()
    assert (job.status, job.released_at, job.worker, job.attempts) == (JobStatus.QUEUED, None, "", 0)
