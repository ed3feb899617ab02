"""Hosts whose clocks disagree: job times and the decisions made from them (a stalled job, a lost message, a
vanished worker, a webhook due) come from the database's clock; which worker ran each attempt of a job; worker
log lines that name their job; a web host that cannot prepare SDXL jobs says so (/healthz, a JSON 503).

The last test runs a real SDXL worker whose clock is fifteen minutes ahead (tests/skewed_clock.py) beside the
live workers: it runs a job and the housekeeping checks, and fails nothing."""

import logging
import re
import socket
import sys
import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.db.models.functions import Now
from django.test import Client
from django.utils import timezone
from helpers import ROOT, Stack, create_user, sdxl_worker_command, worker_env

from generation import brokers, clock, job_types, presence, scheduler, submission, tasks, webhooks
from generation.models import Job, JobStatus, WebhookDelivery
from generation.worker import heartbeats, runtime
from ourvidz.celery import app

AHEAD = timedelta(minutes=15)  # the skew measured: a host whose clock ran this far ahead failed healthy jobs


def make_job(user, job_type="sdxl_image_fast", **fields):
    job = submission.build_job(user, job_type, "a lighthouse at dusk")
    for name, value in fields.items():
        setattr(job, name, value)
    job.save()
    return job


@pytest.fixture
def clock_ahead(monkeypatch):
    """This process's wall clock, as the project reads it, AHEAD of the database's (call it to move it)."""
    real_now, real_time = timezone.now, time.time

    def move():
        monkeypatch.setattr(timezone, "now", lambda: real_now() + AHEAD)
        monkeypatch.setattr(time, "time", lambda: real_time() + AHEAD.total_seconds())
    return move


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(create_user("opsy", is_staff=True))
    return client


# --- one clock ------------------------------------------------------------------------------------------

def test_a_host_whose_clock_runs_ahead_times_jobs_by_the_database(alice, clock_ahead):
    job = make_job(alice)
    clock_ahead()
    runtime.run(job.pk, "sdxl", lambda run: [])
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    # Not fifteen minutes in the future: the wait and the duration are what they were.
    assert job.created_at <= job.started_at <= job.completed_at <= clock.now()


def test_a_host_whose_clock_runs_ahead_fails_no_job_running_fine_elsewhere(alice, clock_ahead):
    running = make_job(alice, status=JobStatus.PROCESSING, worker="sdxl@elsewhere/7")
    Job.objects.filter(pk=running.pk).update(started_at=Now())  # started just now on another host
    stalled = make_job(alice, status=JobStatus.PROCESSING)
    limit = timedelta(seconds=stalled.type.hard_time_limit() + tasks.GRACE_SECONDS)
    Job.objects.filter(pk=stalled.pk).update(started_at=Now() - limit - timedelta(seconds=5))
    clock_ahead()
    assert tasks.fail_stalled_jobs() == 1
    assert Job.objects.get(pk=running.pk).status == JobStatus.PROCESSING
    assert Job.objects.get(pk=stalled.pk).status == JobStatus.FAILED  # past its limit by the database's clock


def test_a_host_whose_clock_runs_ahead_sends_no_message_again_too_soon(alice, sandbox, clock_ahead):
    sandbox.private_queues()
    sandbox.worker("sdxl")
    job = make_job(alice, queue=job_types.POOLS["sdxl"].queue)
    assert [released.pk for released in scheduler.release(job.queue)] == [job.pk]
    brokers.client().delete(job.queue)  # its message is gone, but only just: it may be on its way
    clock_ahead()
    assert scheduler.recover_lost(job.queue) == 0
    assert Job.objects.get(pk=job.pk).released_at is not None


def test_a_worker_seen_missing_is_timed_by_redis_whichever_host_looks(alice, sandbox, clock_ahead):
    sandbox.worker("sdxl")
    job = make_job(alice, status=JobStatus.PROCESSING, released_at=timezone.now(), releases=1,
                   worker=f"sdxl@gone-{uuid.uuid4().hex[:8]}/4242")
    assert scheduler.recover_orphans(job.queue) == 0  # one host sees its worker missing, just now
    clock_ahead()
    assert scheduler.recover_orphans(job.queue) == 0  # nor is it gone for one whose clock runs ahead
    assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING


def test_a_webhook_queued_by_a_host_whose_clock_runs_ahead_is_due_at_once(alice, clock_ahead):
    job = make_job(alice, webhook="https://hooks.example.com/ourvidz", webhook_events_filter=["start"])
    clock_ahead()
    delivery = webhooks.queue(job, "start")
    assert WebhookDelivery.objects.get(pk=delivery.pk).next_attempt_at <= clock.now()


# --- which worker ran it ----------------------------------------------------------------------------------

def test_each_attempt_records_its_worker_and_host_shown_to_staff(alice, alice_api, monkeypatch):
    host = socket.gethostname()
    monkeypatch.setitem(heartbeats.status, "name", "sdxl-gpu1@box-1")
    job = make_job(alice)
    runtime.run(job.pk, "sdxl", lambda run: [])
    job.refresh_from_db()
    (attempt,) = job.metadata["attempts"]
    assert (attempt["worker"], attempt["host"]) == ("sdxl-gpu1@box-1", host)
    assert datetime.fromisoformat(attempt["started_at"]) == job.started_at  # the database's time
    monkeypatch.setitem(heartbeats.status, "name", "sdxl-gpu2@box-2")
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)  # as if delivered again: a second start
    runtime.run(job.pk, "sdxl", lambda run: [])
    job.refresh_from_db()
    assert [a["worker"] for a in job.metadata["attempts"]] == ["sdxl-gpu1@box-1", "sdxl-gpu2@box-2"]

    body = alice_api.get(f"/api/jobs/{job.pk}/").json()  # its owner: hosts are the operators' business
    assert body["attempts"] == [] and "attempts" not in body["metadata"]
    operator = create_user("opsy", is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(operator)
    admin = staff.get(f"/admin/generation/job/{job.pk}/change/").content.decode()
    assert f"sdxl-gpu1@box-1 on {host}" in admin and f"sdxl-gpu2@box-2 on {host}" in admin
    assert f"sdxl-gpu2@box-2 ({host})" in staff.get("/admin/generation/job/").content.decode()
    own = make_job(operator)
    runtime.run(own.pk, "sdxl", lambda run: [])
    body = staff.get(f"/api/jobs/{own.pk}/").json()
    assert [(a["worker"], a["host"]) for a in body["attempts"]] == [("sdxl-gpu2@box-2", host)]
    assert body["metadata"]["attempts"] == body["attempts"]


def test_the_dashboard_shows_what_each_worker_ran(alice, sandbox, staff_client):
    name = sandbox.worker("sdxl", "sdxl-gpu1@box-1")
    identity = presence.identity(name, 4242)
    make_job(alice, status=JobStatus.COMPLETED, worker=identity, completed_at=timezone.now())
    make_job(alice, status=JobStatus.FAILED, worker=identity, completed_at=timezone.now(), error_message="boom")
    running = make_job(alice, status=JobStatus.PROCESSING, worker=identity, started_at=timezone.now())
    html = staff_client.get("/dashboard/").content.decode()
    jobs = re.search(r'<div class="hint worker-jobs">(.*?)</div>', html, re.S).group(1)
    assert " ".join(jobs.split()).startswith("1 completed · 1 failed in the last 1 h · running")
    assert f'href="/admin/generation/job/{running.pk}/change/"' in jobs
    assert '<td class="failure-worker">sdxl-gpu1@box-1</td>' in html


def test_log_lines_written_while_a_job_runs_name_it(alice, caplog):
    job = make_job(alice)

    def generate(run):
        logging.getLogger("diffusers.pipelines").warning("a pipeline's own line")
        return []

    with caplog.at_level(logging.INFO):
        runtime.run(job.pk, "sdxl", generate)
        logging.getLogger("generation").warning("after the job")
    lines = [record.getMessage() for record in caplog.records]
    assert f"[job {job.pk}] a pipeline's own line" in lines
    assert any(line.startswith(f"[job {job.pk}] job {job.pk} rendered") for line in lines)
    assert "after the job" in lines


# --- a web host that cannot prepare SDXL jobs ----------------------------------------------------------------

def test_without_the_tokenizer_healthz_says_so_and_sdxl_submissions_get_a_json_503(client, alice_api, settings,
                                                                                    tmp_path):
    settings.SDXL_TOKENIZER_PATH = str(tmp_path / "nowhere")
    response = client.get("/healthz")
    assert response.status_code == 503
    health = response.json()
    assert health["status"] == "error" and health["database"] == "ok"
    assert health["tokenizer"].startswith("error: ") and str(tmp_path / "nowhere") in health["tokenizer"]
    assert health["pools"]["sdxl"].startswith("error: ") and health["pools"]["wan"] == "ok"

    response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a cat"}, format="json")
    assert response.status_code == 503 and response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "sdxl_tokenizer_unavailable"
    assert "SDXL_TOKENIZER_PATH" in response.json()["detail"] and response["Retry-After"]
    assert not Job.objects.exists()
    response = alice_api.get("/api/negative-prompt/", {"job_type": "sdxl_image_fast", "prompt": "a cat"})
    assert response.status_code == 503 and response.json()["code"] == "sdxl_tokenizer_unavailable"
    response = alice_api.post("/api/jobs/", {"job_type": "video_fast", "prompt": "waves"}, format="json")
    assert response.status_code == 201  # WAN jobs need no tokenizer here


# --- a real worker whose clock runs fifteen minutes ahead ---------------------------------------------------

@pytest.fixture
def skewed_worker(live_workers, tmp_path):
    """An SDXL worker whose clock runs AHEAD, beside the live workers; it takes tasks from queues of this test's
    own only: a private SDXL queue and a private maintenance queue. Yields (stack, node name, queues)."""
    tag = uuid.uuid4().hex[:8]
    queues = {"sdxl": f"sdxl_queue.{tag}", "maintenance": f"maintenance.{tag}"}
    node = f"skewed-{tag}@{socket.gethostname()}"
    celery = sdxl_worker_command(",".join(queues.values()), f"skewed-{tag}")[1:]
    command = [sys.executable, str(ROOT / "tests" / "skewed_clock.py"), str(AHEAD.total_seconds()), *celery]
    stack = Stack([], worker_env(), tmp_path / "skewed.log", command=command)
    try:
        stack.wait_for(lambda: any(w["name"] == node and w["loaded"] for w in presence.online()), 120,
                       "the skewed worker")
        yield stack, node, queues
    finally:
        stack.stop()
        brokers.client().delete(*queues.values())


@pytest.mark.workers
def test_a_worker_whose_clock_runs_ahead_fails_nothing_and_times_its_jobs_truly(alice, skewed_worker):
    stack, node, queues = skewed_worker
    logged_at = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: ", stack.output(), re.M).group(1)
    assert datetime.strptime(logged_at, "%Y-%m-%d %H:%M:%S") - datetime.now() > AHEAD - timedelta(minutes=1)  # skewed
    # A job running fine on the live SDXL worker, as the database holds it.
    live = next(w for w in presence.online() if "sdxl_queue" in w["queues"])
    elsewhere = make_job(alice, status=JobStatus.PROCESSING, worker=presence.identity(live["name"], live["pid"]),
                         releases=1, attempts=1)
    Job.objects.filter(pk=elsewhere.pk).update(started_at=Now())
    # The skewed worker takes the housekeeping checks...
    checks = ("generation.fail_stalled_jobs", "generation.schedule")
    for name in checks:
        app.send_task(name, queue=queues["maintenance"], task_id=f"{name}.{node}")
    # ...and a job of its own.
    job = make_job(alice, queue=queues["sdxl"])
    assert [released.pk for released in scheduler.release(job.queue)] == [job.pk]
    job = stack.wait_for_job(job.pk)

    stack.wait_for(lambda: all(f"{name}[{name}.{node}] succeeded" in stack.output() for name in checks), 60,
                   "the housekeeping checks")
    assert re.search(r"fail_stalled_jobs\[\S+\] succeeded in [\d.]+s: 0\b", stack.output())  # none failed
    assert Job.objects.get(pk=elsewhere.pk).status == JobStatus.PROCESSING

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.created_at <= job.started_at <= job.completed_at <= clock.now()  # a true wait, not 900 s
    assert [(a["worker"], a["host"]) for a in job.metadata["attempts"]] == [(node, socket.gethostname())]
    assert f"[job {job.pk}] job {job.pk} rendered" in stack.output()
