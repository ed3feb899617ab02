"""The scheduler without worker processes: the release rule, the fair order, tiers and ageing, lost
messages, concurrent schedulers, and what a waiting job says about itself.

Each test pretends workers are online with `sandbox.worker(...)` and, where it reads what was sent,
gives the pools queues of its own (`sandbox.private_queues()`); nothing consumes them.
"""

import os
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from generation import brokers, job_types, scheduler, submission, tasks
from generation.models import Account, Job, JobStatus, Tier
from generation.worker import runtime


def queue_jobs(user, count, job_type="sdxl_image_fast", start=None, **fields):
    """`count` saved waiting jobs of `user`, one second apart from `start` (oldest first)."""
    start = start or timezone.now() - timedelta(minutes=5)
    jobs = []
    for i in range(count):
        job = submission.build_job(user, job_type, f"{user.username} {i}")
        job.created_at = start + timedelta(seconds=i)
        for name, value in fields.items():
            setattr(job, name, value)
        job.save(force_insert=True)
        jobs.append(job)
    return jobs


def owners(jobs):
    return [job.user.username for job in jobs]


def sandbox_queue(pool):
    """The pool's queue as this test sees it (the sandbox's own after private_queues())."""
    return job_types.POOLS[pool].queue


@pytest.fixture
def release(django_capture_on_commit_callbacks):
    """scheduler.release(queue of `pool`), with the messages sent as they are once its transaction commits."""
    def run(pool="sdxl"):
        with django_capture_on_commit_callbacks(execute=True):
            return scheduler.release(sandbox_queue(pool))
    return run


def test_nothing_is_released_without_a_worker_online(release, alice, sandbox):
    sandbox.private_queues()
    queue_jobs(alice, 3)
    assert release() == []
    assert sandbox.sent("sdxl") == []


def test_the_broker_holds_one_job_per_worker_plus_a_buffer(release, alice, sandbox, settings):
    sandbox.private_queues()
    jobs = queue_jobs(alice, 9)
    first = sandbox.worker("sdxl")
    released = release()
    assert [job.pk for job in released] == [job.pk for job in jobs[:2]]  # 1 worker: 1 + a buffer of 1
    assert sandbox.sent("sdxl") == [scheduler.task_id(job.pk, 1) for job in jobs[:2]]
    assert release() == []  # full: nothing more until one starts
    sandbox.worker("sdxl")
    assert len(release()) == 2  # a second worker: room for two more
    settings.SCHEDULER_BUFFER_PER_WORKER = 2
    assert len(release()) == 2  # 2 workers × (1 + 2)
    sandbox.stop(first)
    assert release() == []
    Job.objects.filter(pk__in=[j.pk for j in jobs[:4]]).update(status=JobStatus.PROCESSING)  # four started
    assert len(release()) == 1  # one worker × 3, two still released
    assert Job.objects.filter(released_at__isnull=False).count() == 7
    assert len(sandbox.sent("sdxl")) == 7 == len(set(sandbox.sent("sdxl")))


def test_second_user_starts_before_the_flood(alice, bob, sandbox):
    flood = queue_jobs(alice, 20)
    mine = queue_jobs(bob, 2, start=timezone.now() - timedelta(seconds=30))  # bob came last
    order = scheduler.fair_order(sandbox_queue("sdxl"), 22)
    assert owners(order[:5]) == ["alice", "bob", "alice", "bob", "alice"]
    assert [job.pk for job in order if job.user == alice] == [job.pk for job in flood]  # FIFO within a user
    assert [job.pk for job in order if job.user == bob] == [job.pk for job in mine]


def test_the_user_with_fewer_jobs_in_flight_goes_first(alice, bob, sandbox):
    queue_jobs(alice, 2, start=timezone.now() - timedelta(minutes=10), released_at=timezone.now())  # in the broker
    queue_jobs(alice, 3, start=timezone.now() - timedelta(minutes=9))
    queue_jobs(bob, 3)
    assert owners(scheduler.fair_order(sandbox_queue("sdxl"), 6)) == ["bob", "bob", "alice", "bob", "alice",
                                                                       "alice"]


def test_the_user_served_least_recently_breaks_a_tie(alice, bob, sandbox):
    queue_jobs(alice, 2)
    queue_jobs(bob, 2, start=timezone.now() - timedelta(minutes=1))  # bob's jobs are newer ...
    done = queue_jobs(alice, 1, start=timezone.now() - timedelta(hours=1))[0]
    # ... but alice was just served.
    Job.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED, released_at=timezone.now())
    assert owners(scheduler.fair_order(sandbox_queue("sdxl"), 4)) == ["bob", "alice", "bob", "alice"]


def test_priority_users_go_first_and_a_user_waiting_unserved_rises(alice, bob, charlie, sandbox, settings):
    Account.objects.filter(user=charlie).update(tier=Tier.PRIORITY)
    now = timezone.now()
    queue_jobs(alice, 3, start=now - timedelta(minutes=5))
    queue_jobs(charlie, 2, start=now - timedelta(minutes=1))
    bob.is_staff = True
    bob.save()
    queue_jobs(bob, 1, start=now - timedelta(seconds=30))
    settings.SCHEDULER_AGEING_SECONDS = 3600
    order = owners(scheduler.fair_order(sandbox_queue("sdxl"), 6))
    assert order == ["charlie", "bob", "charlie", "alice", "alice", "alice"]  # staff count as priority
    # Alice has waited 5 minutes unserved: with a 4-minute ageing step she competes with priority users
    # and, with nothing in flight and the oldest job, goes first; served, she is standard again.
    settings.SCHEDULER_AGEING_SECONDS = 240
    assert owners(scheduler.fair_order(sandbox_queue("sdxl"), 6)) == ["alice", "charlie", "bob", "charlie", "alice",
                                                                       "alice"]


def test_a_flood_served_all_along_does_not_age_past_a_newcomer(alice, bob, sandbox, settings):
    settings.SCHEDULER_AGEING_SECONDS = 600
    now = timezone.now()
    queue_jobs(alice, 10, start=now - timedelta(hours=1))  # waiting an hour ...
    served = queue_jobs(alice, 1, start=now - timedelta(hours=2), status=JobStatus.PROCESSING)[0]
    Job.objects.filter(pk=served.pk).update(released_at=now - timedelta(seconds=20))  # ... but served just now
    queue_jobs(bob, 1, start=now - timedelta(seconds=5))
    assert owners(scheduler.fair_order(sandbox_queue("sdxl"), 3)) == ["bob", "alice", "alice"]
    # Had alice waited unserved all that hour, she would rise above bob (who waited seconds).
    Job.objects.filter(pk=served.pk).update(released_at=now - timedelta(hours=1, minutes=30))
    assert owners(scheduler.fair_order(sandbox_queue("sdxl"), 3))[0] == "alice"


def test_a_new_tier_applies_to_the_jobs_already_waiting(alice, sandbox):
    waiting = queue_jobs(alice, 2)
    running = queue_jobs(alice, 1, status=JobStatus.PROCESSING)[0]
    account = Account.objects.get(user=alice)
    account.tier = Tier.PRIORITY
    account.save()  # what the admin's user page saves
    assert {job.tier for job in Job.objects.filter(pk__in=[j.pk for j in waiting])} == {Tier.PRIORITY}
    assert Job.objects.get(pk=running.pk).tier == Tier.STANDARD
    account.tier = Tier.STANDARD
    account.save()
    assert set(Job.objects.filter(pk__in=[j.pk for j in waiting]).values_list("tier", flat=True)) == {0}
    assert submission.build_job(alice, "image_fast", "x").tier == Tier.STANDARD


def test_queue_positions_are_the_order_the_scheduler_releases_in(release, alice, bob, charlie, sandbox, settings):
    sandbox.private_queues()
    Account.objects.filter(user=charlie).update(tier=Tier.PRIORITY)
    queue_jobs(alice, 2, start=timezone.now() - timedelta(minutes=20), released_at=timezone.now())
    queue_jobs(alice, 6, start=timezone.now() - timedelta(minutes=10))
    queue_jobs(bob, 3, start=timezone.now() - timedelta(minutes=8))
    queue_jobs(charlie, 2, start=timezone.now() - timedelta(minutes=1))
    waiting = list(Job.objects.filter(status=JobStatus.QUEUED, released_at__isnull=True))
    sandbox.worker("sdxl")
    settings.SCHEDULER_AGEING_SECONDS = 3600  # no tier has waited long enough to rise
    view = scheduler.PoolView(sandbox_queue("sdxl"), scheduler.presence.online())
    positions = {job.pk: view.outlook(job).position for job in waiting}
    assert sorted(positions.values()) == list(range(3, 3 + len(waiting)))  # alice's two released come first
    settings.SCHEDULER_BUFFER_PER_WORKER = 100  # release everything, in the scheduler's own order
    released = release()
    assert [job.pk for job in released] == sorted(positions, key=positions.get)
    assert owners(released)[:4] == ["charlie", "charlie", "bob", "bob"]  # then bob: nothing in flight yet


def test_estimates_use_the_measured_durations(alice, sandbox):
    sandbox.worker("sdxl")
    scheduler._durations["expires"] = 0.0  # forget what another test measured
    started = timezone.now() - timedelta(seconds=100)
    for seconds in (20, 30):  # sdxl_image_fast, 1 image: 25 s measured, against the table's 4 s
        done = queue_jobs(alice, 1, status=JobStatus.COMPLETED)[0]
        Job.objects.filter(pk=done.pk).update(started_at=started, completed_at=started + timedelta(seconds=seconds))
    running = queue_jobs(alice, 1, status=JobStatus.PROCESSING)[0]
    Job.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(seconds=10))
    first, second = queue_jobs(alice, 2, num_images=1)
    outlooks = scheduler.outlooks(Job.objects.filter(pk__in=[running.pk, first.pk, second.pk]))
    assert outlooks[running.pk].start_seconds == 0 and outlooks[running.pk].finish_seconds == pytest.approx(15, abs=1)
    assert outlooks[first.pk].start_seconds == pytest.approx(15, abs=1)  # the running job's remaining 15 s
    assert outlooks[second.pk].start_seconds == pytest.approx(40, abs=1)  # ... then the first one's 25 s
    assert outlooks[second.pk].finish_seconds == pytest.approx(65, abs=1)
    scheduler._durations["expires"] = 0.0


def test_a_job_no_online_worker_can_serve_waits_and_says_so(release, alice, sandbox):
    job = queue_jobs(alice, 1, reference_type="style")[0]
    sandbox.private_queues()
    Job.objects.filter(pk=job.pk).update(queue=sandbox_queue("sdxl"))
    job.refresh_from_db()
    no_adapter = sandbox.worker("sdxl", reference_types=["composition"])
    assert release() == []
    reason = scheduler.outlooks([job])[job.pk].waiting_reason
    assert reason == "No online SDXL worker can use a 'style' reference now; the job starts when one can."
    sandbox.stop(no_adapter)
    sandbox.worker("sdxl", reference_types=["composition", "style", "character"])
    assert scheduler.outlooks([job])[job.pk].waiting_reason is None
    assert [j.pk for j in release()] == [job.pk]


def test_a_lost_message_is_released_again_and_a_late_one_starts_nothing(release, alice, sandbox, settings,
                                                                       django_capture_on_commit_callbacks):
    sandbox.private_queues()
    sandbox.worker("sdxl")
    job = queue_jobs(alice, 1)[0]
    release()
    brokers.client().delete(sandbox_queue("sdxl"))  # the broker lost the message (a restart, say)
    assert scheduler.recover_lost(sandbox_queue("sdxl")) == 0  # not before SCHEDULER_LOST_AFTER
    lost_since = timezone.now() - timedelta(seconds=settings.SCHEDULER_LOST_AFTER + 1)
    Job.objects.filter(pk=job.pk).update(released_at=lost_since)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.schedule() >= 1  # beat's tick: recovered, then released again
    job.refresh_from_db()
    assert job.releases == 2 and sandbox.sent("sdxl") == [scheduler.task_id(job.pk, 2)]
    # The first message turns up after all: it starts nothing; the second one runs the job.
    runtime.run(str(job.pk), "sdxl", lambda run: [], release=1)
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    runtime.run(str(job.pk), "sdxl", lambda run: [], release=2)
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_a_message_still_in_the_broker_is_not_released_again(release, alice, sandbox, settings):
    sandbox.private_queues()
    sandbox.worker("sdxl")
    job = queue_jobs(alice, 1)[0]
    release()
    Job.objects.filter(pk=job.pk).update(released_at=timezone.now() - timedelta(hours=1))  # a long queue
    assert scheduler.recover_lost(sandbox_queue("sdxl")) == 0
    assert Job.objects.get(pk=job.pk).releases == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_schedulers_release_each_job_once(alice, bob, sandbox):
    sandbox.private_queues()
    queue_jobs(alice, 20)
    queue_jobs(bob, 10)
    for _ in range(4):
        sandbox.worker("sdxl")  # room for 8
    start = threading.Barrier(8)

    def schedule():
        start.wait()
        try:
            scheduler.release(sandbox_queue("sdxl"))
        finally:
            connection.close()

    threads = [threading.Thread(target=schedule) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    released = Job.objects.filter(released_at__isnull=False)
    assert released.count() == 8 and set(released.values_list("releases", flat=True)) == {1}
    sent_ids = [scheduler.task_id(pk, 1) for pk in released.values_list("pk", flat=True)]
    assert sorted(sandbox.sent("sdxl")) == sorted(sent_ids)
    assert owners(released.order_by("created_at")).count("bob") == 4  # fair even under the race


def test_cancelling_a_waiting_job_needs_no_broker(alice_api, alice, settings):
    job = queue_jobs(alice, 1)[0]
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there: the broker is down
    brokers.client.cache_clear()
    try:
        response = alice_api.post(f"/api/jobs/{job.pk}/cancel/")
    finally:
        brokers.client.cache_clear()
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_with_the_broker_down_a_submission_is_accepted_and_released_later(alice_api, sandbox, settings,
                                                                           django_capture_on_commit_callbacks):
    sandbox.private_queues()
    sandbox.worker("sdxl")
    real = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    brokers.client.cache_clear()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a cat"}, format="json")
        body = response.json()
    finally:
        settings.REDIS_URL = real
        brokers.client.cache_clear()
    assert response.status_code == 201 and body["status"] == "queued"
    assert body["waiting_reason"].startswith("The job queue cannot be reached right now")
    assert Job.objects.get(pk=body["id"]).released_at is None and sandbox.sent("sdxl") == []
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.schedule() == 1  # the broker is back: beat's next tick releases it
    assert sandbox.sent("sdxl") == [scheduler.task_id(body["id"], 1)]


@pytest.mark.parametrize("seed", range(8))
def test_positions_match_the_fair_order_in_random_queues(seed, alice, bob, charlie, sandbox, settings):
    import random

    chance = random.Random(seed)
    settings.SCHEDULER_AGEING_SECONDS = 10**6
    now = timezone.now()
    for user in (alice, bob, charlie):
        if chance.random() < 0.4:
            Account.objects.filter(user=user).update(tier=Tier.PRIORITY)
        queue_jobs(user, chance.randint(0, 3), start=now - timedelta(hours=chance.randint(2, 5)),
                   released_at=now - timedelta(minutes=chance.randint(1, 50)))
        if chance.random() < 0.5:
            done = queue_jobs(user, 1, start=now - timedelta(hours=6), status=JobStatus.COMPLETED)[0]
            Job.objects.filter(pk=done.pk).update(released_at=now - timedelta(minutes=chance.randint(1, 50)))
        queue_jobs(user, chance.randint(1, 6), start=now - timedelta(minutes=chance.randint(10, 100)))
    sandbox.worker("sdxl")
    waiting = list(Job.objects.filter(status=JobStatus.QUEUED, released_at__isnull=True))
    view = scheduler.PoolView(sandbox_queue("sdxl"), scheduler.presence.online())
    positions = {job.pk: view.outlook(job).position for job in waiting}
    order = scheduler.fair_order(sandbox_queue("sdxl"), len(waiting))
    assert [positions[job.pk] for job in order] == list(range(view.released + 1, view.released + 1 + len(order)))


def test_a_released_job_tells_its_page(alice, sandbox, release):
    from generation import events

    job = queue_jobs(alice, 1)[0]
    sandbox.worker("sdxl")
    changes = events.changed_jobs(alice.pk, 3, heartbeat=1)  # the Workspace's stream, subscribed now
    release()
    assert next(changes) == str(job.pk)


def test_jobs_queued_before_the_scheduler_are_not_sent_twice(alice, sandbox, settings, release):
    """The migration counts them as released (release 0); a message of before, which carries no release
    number, keeps them from being sent again; one whose message is gone is sent again."""
    import importlib

    from django.apps import apps as django_apps

    from ourvidz.celery import app

    sandbox.private_queues()
    sandbox.worker("sdxl")
    kept, gone = queue_jobs(alice, 2)
    importlib.import_module("generation.migrations.0006_scheduler").count_queued_jobs_as_released(django_apps, None)
    assert set(Job.objects.values_list("releases", flat=True)) == {0} and not Job.objects.filter(released_at=None)
    app.send_task("sdxl.generate", args=[str(kept.pk)], queue=sandbox_queue("sdxl"))  # as submission sent it
    Job.objects.update(released_at=timezone.now() - timedelta(seconds=settings.SCHEDULER_LOST_AFTER + 1))
    assert scheduler.recover_lost(sandbox_queue("sdxl")) == 1
    assert [job.pk for job in release()] == [gone.pk]
    assert Job.objects.get(pk=kept.pk).releases == 0  # its old message runs it (release 0)


def test_a_reference_job_is_accepted_with_the_broker_down(alice_api, alice, settings):
    from generation.models import ReferenceImage

    ref = ReferenceImage.objects.create(user=alice, path="1/a.png", content_type="image/png", width=8, height=8,
                                        size_bytes=10)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    brokers.client.cache_clear()
    try:
        response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a cat",
                                                 "reference_image": ref.pk, "reference_type": "composition"},
                                  format="json")
    finally:
        brokers.client.cache_clear()
    assert response.status_code == 201, response.content  # this server's configuration answers for the workers


def test_time_left_of_running_jobs_counts_each(alice, bob, sandbox):
    scheduler._durations["expires"] = 0.0
    started = timezone.now() - timedelta(seconds=100)
    done = queue_jobs(alice, 1, status=JobStatus.COMPLETED)[0]
    Job.objects.filter(pk=done.pk).update(started_at=started, completed_at=started + timedelta(seconds=10))
    for user, ago in ((alice, 9), (bob, 1)):  # two workers, each on a 10-second job
        job = queue_jobs(user, 1, status=JobStatus.PROCESSING)[0]
        Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=ago))
    sandbox.worker("sdxl")
    view = scheduler.PoolView(sandbox_queue("sdxl"))
    assert view.load[1] == pytest.approx(1 + 9, abs=0.5)
    scheduler._durations["expires"] = 0.0


def test_a_job_whose_worker_vanished_goes_back_to_the_queue(alice, sandbox, monkeypatch):
    alive = sandbox.worker("sdxl")
    orphan, kept, unnamed = queue_jobs(alice, 3, status=JobStatus.PROCESSING, released_at=timezone.now(),
                                       releases=1, attempts=1)
    Job.objects.filter(pk=orphan.pk).update(worker=f"sdxl@gone-{uuid.uuid4().hex[:8]}/4242")
    Job.objects.filter(pk=kept.pk).update(worker=scheduler.presence.identity(alive, os.getpid()))
    assert scheduler.recover_orphans(sandbox_queue("sdxl")) == 0  # seen missing just now: not yet
    monkeypatch.setattr(scheduler, "MISSING_CONFIRM_SECONDS", 0)
    assert scheduler.recover_orphans(sandbox_queue("sdxl")) == 1
    orphan.refresh_from_db()
    assert (orphan.status, orphan.released_at, orphan.worker, orphan.attempts) == (JobStatus.QUEUED, None, "", 1)
    assert Job.objects.get(pk=kept.pk).status == Job.objects.get(pk=unnamed.pk).status == JobStatus.PROCESSING
    assert [job.pk for job in scheduler.fair_order(sandbox_queue("sdxl"), 5)] == [orphan.pk]  # released again


def test_workers_whose_heartbeats_expired_during_a_redis_outage_keep_their_jobs(alice, sandbox, monkeypatch):
    """Heartbeats expire by the clock while Redis is down; the workers write them again once it is back."""
    name = sandbox.worker("sdxl")
    job = queue_jobs(alice, 1, status=JobStatus.PROCESSING, released_at=timezone.now(), releases=1)[0]
    Job.objects.filter(pk=job.pk).update(worker=scheduler.presence.identity(name, os.getpid()))
    sandbox.stop(name)  # its heartbeat expired while Redis was down
    assert scheduler.recover_orphans(sandbox_queue("sdxl")) == 0
    sandbox.worker("sdxl", name)  # and is written again: the worker never went away
    monkeypatch.setattr(scheduler, "MISSING_CONFIRM_SECONDS", 0)  # however long it was seen missing before
    assert scheduler.recover_orphans(sandbox_queue("sdxl")) == 0
    assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING


def test_a_job_that_killed_its_worker_each_time_fails_saying_so(alice, settings):
    job = queue_jobs(alice, 1, status=JobStatus.PROCESSING, attempts=settings.JOB_MAX_ATTEMPTS)[0]
    runtime.run(str(job.pk), "sdxl", lambda run: pytest.fail("a poison job must not run again"))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == settings.JOB_MAX_ATTEMPTS + 1
    assert job.error_message == ("The job was stopped 3 times by its worker dying while it ran (a crash, or running "
                                 "out of memory); it is not tried again.")
    assert job.metadata["worker_deaths"] == 3
