"""The Workspace's My queue, server side: cancelling all of a user's waiting jobs (each as a single cancel: the
conditional move, the refund, the webhook, the event; running jobs and other users' jobs untouched), and
clearing finished jobs off the Workspace (the owner's, finished ones only; the Library and the API keep them)."""

import json

import pytest

from generation import events, submission, webhooks
from generation.models import Account, CreditEntry, CreditKind, Image, Job, JobStatus
from generation.web import workspace

JOB = {"job_type": "sdxl_image_high", "prompt": "a lighthouse"}  # 2 credits in the job-type table
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def published(monkeypatch):
    """The ids of the jobs whose change went out to their owner's pages (after the commit)."""
    sent = []
    monkeypatch.setattr(events, "_publish", lambda user_id, job_id: sent.append(str(job_id)))
    return sent


def balance(user):
    return Account.objects.get(user=user).credits


def submit(user, **fields):
    job, _ = submission.submit(user, {**JOB, **fields})
    return job


def finished(user, status, prompt="done"):
    job = submission.build_job(user, "sdxl_image_fast", prompt)
    job.status = status
    job.save()
    return job


def status_of(job):
    return Job.objects.get(pk=job.pk).status


def refunds(job):
    return list(CreditEntry.objects.filter(job=job, kind=CreditKind.REFUND).values_list("reason", flat=True))


def page_jobs(client):
    response = client.get("/")
    assert response.status_code == 200
    text = response.content.decode()
    start = text.index('<script id="workspace-data" type="application/json">') + len(
        '<script id="workspace-data" type="application/json">')
    return [job["id"] for job in json.loads(text[start:text.index("</script>", start)])["jobs"]]


# --- cancel all waiting ------------------------------------------------------------------------------------

def test_cancel_waiting_cancels_the_users_queued_jobs_only(alice, bob, alice_api, published, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    monkeypatch.setattr(webhooks, "post", lambda delivery_id, countdown=None: None)  # no webhooks worker here
    waiting = [submit(alice, prompt=f"waiting {i}") for i in range(3)]
    hooked = submit(alice, webhook=HOOK, webhook_events_filter=["completed"])
    running = submit(alice, prompt="running")
    Job.move(running.pk, JobStatus.PROCESSING)
    theirs = submit(bob)
    before = balance(alice)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post("/api/jobs/cancel-waiting/")
    assert response.status_code == 200, response.content
    assert sorted(response.json()["cancelled"]) == sorted(str(job.pk) for job in [*waiting, hooked])
    assert response.json()["skipped"] == []
    assert [status_of(job) for job in [*waiting, hooked]] == ["cancelled"] * 4
    assert (status_of(running), status_of(theirs)) == ("processing", "queued")
    # As a single cancel: each refunded, its webhook's "completed" delivery written, its owner's pages told.
    assert balance(alice) == before + 4 * 2
    assert all(refunds(job) == ["cancelled before it started"] for job in [*waiting, hooked])
    assert refunds(running) == [] and refunds(theirs) == []
    assert list(hooked.webhook_deliveries.values_list("event", flat=True)) == ["completed"]
    assert sorted(published) == sorted(str(job.pk) for job in [*waiting, hooked])

    again = alice_api.post("/api/jobs/cancel-waiting/")
    assert again.status_code == 200 and again.json() == {"cancelled": [], "skipped": []}
    assert balance(alice) == before + 8  # refunded once


def test_a_job_that_starts_meanwhile_is_left_running_and_reported(alice, monkeypatch):
    first, second = submit(alice, prompt="first"), submit(alice, prompt="second")
    cancel = submission.cancel

    def worker_takes_second_meanwhile(job, **kwargs):
        if job.pk == second.pk:
            assert Job.move(second.pk, JobStatus.PROCESSING)
        return cancel(job, **kwargs)

    monkeypatch.setattr(submission, "cancel", worker_takes_second_meanwhile)
    cancelled, skipped = submission.cancel_waiting(alice)
    assert ([job.pk for job in cancelled], [job.pk for job in skipped]) == ([first.pk], [second.pk])
    assert (status_of(first), status_of(second)) == ("cancelled", "processing")
    assert refunds(second) == []


def test_cancel_waiting_needs_a_login(alice):
    from rest_framework.test import APIClient

    submit(alice)
    assert APIClient().post("/api/jobs/cancel-waiting/").status_code in (401, 403)
    assert Job.objects.get().status == "queued"


# --- clearing finished jobs off the Workspace --------------------------------------------------------------

def test_clear_takes_a_finished_job_off_the_workspace_and_leaves_it_in_the_library(
        alice, alice_api, bob_api, alice_client, published, django_capture_on_commit_callbacks):
    done = finished(alice, JobStatus.COMPLETED, prompt="a kept picture")
    image = Image.objects.create(user=alice, job=done, image_path="a/b.png", prompt=done.prompt,
                                 bucket=done.type.bucket, quality="fast", format="png", width=64, height=64)
    waiting = submit(alice)

    assert bob_api.post(f"/api/jobs/{done.pk}/clear/").status_code == 404  # not bob's
    refused = alice_api.post(f"/api/jobs/{waiting.pk}/clear/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "The job is still queued; only a finished job can be cleared."
    with django_capture_on_commit_callbacks(execute=True):
        cleared = alice_api.post(f"/api/jobs/{done.pk}/clear/")
    assert cleared.status_code == 200 and cleared.json()["cleared"] is True
    assert published == [str(done.pk)]  # alice's other open Workspaces drop its card
    assert not Job.objects.get(pk=waiting.pk).cleared

    assert page_jobs(alice_client) == [str(waiting.pk)]
    assert alice_api.get(f"/api/jobs/{done.pk}/").json()["cleared"] is True  # the API still lists it
    library = alice_client.get("/library/")
    assert f'data-id="{image.pk}"' in library.content.decode()


def test_clear_finished_clears_every_finished_job_of_the_user(alice, bob, alice_api, alice_client, published,
                                                              django_capture_on_commit_callbacks):
    done = [finished(alice, status) for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)]
    waiting = submit(alice)
    running = submit(alice)
    Job.move(running.pk, JobStatus.PROCESSING)
    theirs = finished(bob, JobStatus.COMPLETED)
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post("/api/jobs/clear-finished/")
    assert response.status_code == 200 and response.json() == {"cleared": 3}
    assert sorted(published) == sorted(str(job.pk) for job in done)  # her other open Workspaces drop the cards
    assert all(Job.objects.get(pk=job.pk).cleared for job in done)
    assert not Job.objects.filter(pk__in=[waiting.pk, running.pk, theirs.pk], cleared=True).exists()
    assert page_jobs(alice_client) == [str(running.pk), str(waiting.pk)]
    assert alice_api.post("/api/jobs/clear-finished/").json() == {"cleared": 0}
    assert alice_api.get("/api/jobs/").json()["count"] == 5  # the API lists them all


def test_the_workspace_lists_every_waiting_job_past_the_latest_ones(alice, alice_client):
    old_waiting = submit(alice, prompt="waiting a long time")
    latest = [finished(alice, JobStatus.COMPLETED, prompt=f"done {i}") for i in range(workspace.RECENT_JOBS)]
    assert page_jobs(alice_client) == [str(job.pk) for job in reversed(latest)] + [str(old_waiting.pk)]
    assert submission.clear(latest[0])
    assert page_jobs(alice_client) == [str(job.pk) for job in reversed(latest[1:])] + [str(old_waiting.pk)]
