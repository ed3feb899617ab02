"""The scheduler with real worker processes: fair share on a worker, a lost message, the broker down at
submission. The first two give the SDXL pool a queue of the test's own and start a worker process on it
once the jobs wait, so no other test's workers take part."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import Stack, sdxl_worker_command, worker_env

from generation import brokers, job_types, scheduler, submission, tasks
from generation.models import Job, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def start_worker(tiny_models, tmp_path):
    """start_worker(): one SDXL worker process on the SDXL pool's queue (the test's own); stopped after."""
    stacks = []

    def start():
        queue = job_types.POOLS["sdxl"].queue
        stack = Stack([], worker_env(), tmp_path / f"worker-{len(stacks)}.log",
                      command=sdxl_worker_command(queue, f"fair-{queue.rsplit('.', 1)[-1]}"))
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def queue_jobs(user, count, start):
    jobs = []
    for i in range(count):
        job = submission.build_job(user, "sdxl_image_fast", f"{user.username} {i}")
        job.created_at = start + timedelta(milliseconds=i)
        job.save(force_insert=True)
        jobs.append(job)
    return jobs


def test_a_second_user_starts_next_on_a_real_worker(alice, bob, sandbox, start_worker):
    sandbox.private_queues()
    queue = job_types.POOLS["sdxl"].queue
    # No worker online: the jobs wait in the database, nothing goes to the broker.
    flood = queue_jobs(alice, 20, timezone.now() - timedelta(minutes=2))
    later = queue_jobs(bob, 2, timezone.now() - timedelta(minutes=1))
    assert scheduler.release(queue) == [] and brokers.client().llen(queue) == 0

    held, stop_watching = [], threading.Event()

    def watch_the_broker():  # what the queue's Redis list holds while the jobs run
        while not stop_watching.is_set():
            held.append(brokers.client().llen(queue))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_the_broker)
    watcher.start()
    try:
        worker = start_worker()  # announces itself; the scheduler releases to it as jobs end
        worker.wait_for(lambda: Job.objects.filter(status=JobStatus.COMPLETED).count() == 22, 180, "all 22 jobs")
    finally:
        stop_watching.set()
        watcher.join()
    started = list(Job.objects.order_by("started_at").values_list("pk", flat=True))
    assert later[0].pk in started[:2], [str(pk)[:8] for pk in started]
    assert [pk for pk in started if pk in {j.pk for j in flood}] == [j.pk for j in flood]  # FIFO within a user
    assert max(held) <= scheduler.release_limit(1) == 2 and len(held) > 50
    assert set(Job.objects.values_list("releases", flat=True)) == {1}  # each sent once


def test_a_job_whose_message_was_lost_still_completes(alice, sandbox, settings, start_worker):
    sandbox.private_queues()
    queue = job_types.POOLS["sdxl"].queue
    job = queue_jobs(alice, 1, timezone.now())[0]
    fake = sandbox.worker("sdxl")  # the scheduler thinks a worker is there ...
    scheduler.release(queue)
    assert brokers.client().llen(queue) == 1
    brokers.client().delete(queue)  # ... and the broker loses the message (a Redis restart without persistence)
    sandbox.stop(fake)
    Job.objects.filter(pk=job.pk).update(released_at=timezone.now() - timedelta(seconds=settings.SCHEDULER_LOST_AFTER))
    worker = start_worker()
    sandbox.worker("sdxl", name="seen-by-this-test")  # the real worker, as this test's scheduler sees it
    worker.wait_for(lambda: tasks.schedule() or Job.objects.get(pk=job.pk).releases == 2, 60, "the release again")
    done = worker.wait_for_job(job.pk, 120)
    assert done.status == JobStatus.COMPLETED and done.releases == 2 and done.images.count() == 1


def test_with_the_broker_down_a_job_is_accepted_and_runs_when_it_is_back(alice_api, live_workers, settings):
    real = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there: the broker is down for the web tier
    brokers.client.cache_clear()
    try:
        response = alice_api.post("/api/jobs/", {"job_type": "image_fast", "prompt": "a cat"}, format="json")
    finally:
        settings.REDIS_URL = real
        brokers.client.cache_clear()
    body = response.json()
    assert response.status_code == 201 and body["status"] == "queued", body
    assert body["waiting_reason"].startswith("The job queue cannot be reached right now")
    assert Job.objects.get(pk=body["id"]).released_at is None
    tasks.schedule()  # the broker is back: beat's next tick
    done = live_workers.wait_for_job(body["id"], 120)
    assert done.status == JobStatus.COMPLETED and done.releases == 1
