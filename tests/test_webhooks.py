"""Webhooks: signed deliveries of a job's changes to a real receiver on loopback, retried under one id, refused
for internal addresses; and one job end to end through the worker processes and the webhooks worker."""

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import Stack, worker_env
from PIL import Image as PILImage
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from generation import brokers, submission, webhooks
from generation.api.webhooks import job_body
from generation.models import Job, JobStatus, WebhookDelivery, WebhookStatus
from generation.worker import images, runtime

# --- a receiver on loopback -------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    headers: dict = field(default_factory=dict)
    body: bytes = b"thanks"


@dataclass
class Received:
    path: str
    headers: dict
    body: str


class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next of its answers (then 200s) and keeps
    what it received."""

    def __init__(self, *answers):
        self.answers = [a if isinstance(a, Answer) else Answer(a) for a in answers]
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                receiver.requests.append(Received(self.path, dict(self.headers), body))
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
                time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """Start receivers: receiver(500, Answer(200, delay=1), ...)."""
    started = []

    def start(*answers):
        started.append(Receiver(*answers))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    """The receivers' host allowed (http, loopback), retries due at once, short waits for an answer."""
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_RETRY_DELAY = 0
    settings.WEBHOOK_READ_TIMEOUT = 0.5
    settings.PROGRESS_INTERVAL = 0


# --- jobs ----------------------------------------------------------------------------------------------------

def queued_job(user, url, events=None, **kwargs):
    job = submission.build_job(user, "sdxl_image_fast", "a lighthouse at dusk", webhook=url,
                               webhook_events_filter=events or webhooks.DEFAULT_EVENTS, **kwargs)
    job.save()
    return job


def render(steps=3):
    """A pool's `generate` stand-in: `steps` steps, then one flat picture."""
    def generate(run):
        for step in range(1, steps + 1):
            run.step(step, steps)
        picture = PILImage.new("RGB", (run.job.width, run.job.height), "orange")
        return [runtime.Output(images.encode_png(picture, "p"), "png", picture, picture.width, picture.height)]
    return generate


def completed_job(user, url, events=None):
    job = queued_job(user, url, events)
    runtime.run(job.pk, "sdxl", render())
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    return job


def sent_events(job):
    return list(job.webhook_deliveries.order_by("created_at").values_list("event", flat=True))


def verify(secret, request):
    return Webhook(secret).verify(request.body, request.headers)


# --- signing and the body ------------------------------------------------------------------------------------

def test_a_delivery_is_signed_so_that_standardwebhooks_verifies_it(alice, alice_api, receiver):
    hook = receiver()
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    attempt = webhooks.deliver(delivery.pk, job_body)

    assert attempt.status_code == 200 and attempt.address == "127.0.0.1" and attempt.response_excerpt == "thanks"
    (request,) = hook.requests
    assert request.headers["webhook-id"] == delivery.webhook_id and request.headers["Content-Type"] == \
        "application/json"
    payload = verify(webhooks.secret(alice), request)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.secret(alice)).verify(request.body.replace("completed", "failed"), request.headers)
    # The body is the job as the API shows it, with absolute file URLs.
    shown = alice_api.get(f"/api/jobs/{job.pk}/").json()
    assert payload.keys() == shown.keys()
    files = ("images", "video")
    assert {k: v for k, v in payload.items() if k not in files} == {k: v for k, v in shown.items() if k not in files}
    assert payload["status"] == "completed" and len(payload["images"]) == 1
    assert payload["images"][0]["url"].startswith("http://127.0.0.1:8000/")
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.DELIVERED and delivery.finished_at and delivery.next_attempt_at is None


def test_a_delivery_connects_to_the_checked_address_and_sends_the_host_it_was_given(alice, receiver, settings,
                                                                                   monkeypatch):
    hook = receiver()
    real = socket.getaddrinfo
    resolved = []

    def getaddrinfo(host, *args, **kwargs):
        resolved.append(host)
        return real("127.0.0.1" if host == "hooks.example.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.test"]
    job = completed_job(alice, f"http://hooks.example.test:{hook.port}/hook?user=7")

    attempt = webhooks.deliver(job.webhook_deliveries.get().pk, job_body)

    assert attempt.status_code == 200 and attempt.address == "127.0.0.1"
    (request,) = hook.requests
    assert request.headers["Host"] == f"hooks.example.test:{hook.port}" and request.path == "/hook?user=7"
    assert "hooks.example.test" in resolved


# --- retries -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_failed_delivery_is_retried_with_the_same_id(alice, receiver, status):
    hook = receiver(status)
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    first = webhooks.deliver(delivery.pk, job_body)
    delivery.refresh_from_db()
    assert first.status_code == status and delivery.status == WebhookStatus.PENDING and delivery.next_attempt_at
    second = webhooks.deliver(delivery.pk, job_body)

    assert (first.number, second.number, second.status_code) == (1, 2, 200)
    assert [r.headers["webhook-id"] for r in hook.requests] == [delivery.webhook_id] * 2
    assert hook.requests[0].body == hook.requests[1].body  # the same message, signed again
    assert all(verify(webhooks.secret(alice), request) for request in hook.requests)
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.DELIVERED
    assert webhooks.deliver(delivery.pk, job_body) is None and len(hook.requests) == 2  # delivered: done


def test_a_delivery_that_times_out_is_retried(alice, receiver):
    hook = receiver(Answer(200, delay=3))  # longer than WEBHOOK_READ_TIMEOUT
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    first = webhooks.deliver(delivery.pk, job_body)
    second = webhooks.deliver(delivery.pk, job_body)

    assert first.status_code is None and "timed out" in first.error
    assert second.status_code == 200
    assert [r.headers["webhook-id"] for r in hook.requests] == [delivery.webhook_id] * 2


def test_a_receiver_that_cannot_be_reached_is_retried(alice, receiver):
    hook = receiver()
    hook.stop()  # nothing listens on its port any more
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    attempt = webhooks.deliver(delivery.pk, job_body)

    delivery.refresh_from_db()
    assert attempt.status_code is None and "ConnectionRefusedError" in attempt.error
    assert delivery.status == WebhookStatus.PENDING


@pytest.mark.parametrize("status", [400, 404, 410])
def test_a_client_error_is_not_retried(alice, receiver, status):
    hook = receiver(Answer(status, body=b"no such hook\n" + b"x" * 5000))
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    attempt = webhooks.deliver(delivery.pk, job_body)

    delivery.refresh_from_db()
    assert attempt.status_code == status and delivery.status == WebhookStatus.FAILED
    assert attempt.response_excerpt.startswith("no such hook x") and len(attempt.response_excerpt) == 200
    assert webhooks.deliver(delivery.pk, job_body) is None and len(hook.requests) == 1


def test_a_redirect_is_not_followed(alice, receiver):
    elsewhere = receiver()
    hook = receiver(Answer(302, headers={"Location": elsewhere.url}))
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    attempt = webhooks.deliver(delivery.pk, job_body)

    delivery.refresh_from_db()
    assert attempt.status_code == 302 and "redirect" in attempt.error and elsewhere.url in attempt.error
    assert elsewhere.requests == [] and delivery.status == WebhookStatus.FAILED


def test_retries_end_after_webhook_retry_for(alice, receiver, settings):
    settings.WEBHOOK_RETRY_FOR = 0
    hook = receiver(500)
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()

    webhooks.deliver(delivery.pk, job_body)

    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.FAILED and len(hook.requests) == 1


def test_retry_delays_double_with_jitter_up_to_an_hour(settings):
    settings.WEBHOOK_RETRY_DELAY = 10
    for attempt, full in [(1, 10), (2, 20), (3, 40), (9, 2560), (10, 3600), (30, 3600)]:
        delays = {webhooks.backoff(attempt) for _ in range(20)}
        assert all(full / 2 <= delay <= full for delay in delays) and len(delays) > 1, attempt


# --- which changes are sent ----------------------------------------------------------------------------------

@pytest.mark.parametrize("events, sent", [
    (["completed"], ["completed"]),
    (["start", "completed"], ["start", "completed"]),
    (["output"], ["output"]),
    (["output", "completed"], ["completed"]),  # one change, one delivery
    (["start", "progress"], ["start", "progress"]),  # three steps: the later ones found the first waiting
])
def test_the_events_filter_is_honoured(alice, events, sent):
    job = completed_job(alice, "http://127.0.0.1:9/hook", events)
    assert sent_events(job) == sent


def test_a_failed_or_cancelled_job_is_completed_not_output(alice):
    failed = queued_job(alice, "http://127.0.0.1:9/hook", ["output", "completed"])
    runtime.run(failed.pk, "sdxl", lambda run: 1 / 0)
    cancelled = queued_job(alice, "http://127.0.0.1:9/hook", ["output", "completed"])
    submission.cancel(cancelled)
    quiet = queued_job(alice, "http://127.0.0.1:9/hook", ["output"])
    submission.cancel(quiet)
    assert (sent_events(failed), sent_events(cancelled), sent_events(quiet)) == (["completed"], ["completed"], [])


def test_a_job_without_a_webhook_sends_nothing(alice):
    job = completed_job(alice, "", ["start", "progress", "output", "completed"])
    assert not WebhookDelivery.objects.filter(job=job).exists()


def test_progress_deliveries_wait_one_at_a_time(alice, receiver):
    hook = receiver()
    job = queued_job(alice, hook.url, ["progress"])
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PROCESSING)
    run = runtime.JobRun(Job.objects.get(pk=job.pk))
    run.step(1, 4)
    run.step(2, 4)
    assert sent_events(job) == ["progress"]
    first = job.webhook_deliveries.get()

    webhooks.deliver(first.pk, job_body)
    run.step(3, 4)

    assert sent_events(job) == ["progress", "progress"]
    assert json.loads(hook.requests[0].body)["current_step"] == 2  # rendered when sent: the latest step


# --- where deliveries may go ----------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.1.10", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.251", "240.0.0.1", "255.255.255.255", "::1",
                                     "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "::ffff:127.0.0.1", "ff02::1"])
def test_internal_addresses_are_not_public(address):
    assert not webhooks.public(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_internet_addresses_are_public(address):
    assert webhooks.public(address)


@pytest.mark.parametrize("url", [
    "https://10.0.0.7/hook",
    "https://169.254.169.254/latest/meta-data/",  # the cloud metadata address
    "https://localhost/hook",  # resolves to loopback, and is not allowlisted
    "https://[::1]/hook",
    "http://hooks.example.com/hook",  # plain http to a host not allowlisted
    "https://user:secret@hooks.example.com/hook",
    "ftp://hooks.example.com/hook",
    "https://hooks.invalid/hook",  # does not resolve
])
def test_a_webhook_to_an_internal_or_unusable_address_is_refused_at_submission(alice_api, url):
    response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a fox", "webhook": url},
                              format="json")
    assert response.status_code == 400 and list(response.json()) == ["webhook"], response.json()
    assert not Job.objects.exists()


def test_a_webhook_and_its_events_are_taken_at_submission_and_shown_on_the_job(alice_api, receiver):
    hook = receiver()
    response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a fox", "webhook": hook.url,
                                             "webhook_events_filter": ["start", "completed", "start"]}, format="json")
    assert response.status_code == 201, response.json()
    assert (response.json()["webhook"], response.json()["webhook_events_filter"]) == (hook.url, ["start", "completed"])
    plain = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a fox"}, format="json").json()
    assert (plain["webhook"], plain["webhook_events_filter"]) == ("", ["completed"])


@pytest.mark.parametrize("events", [[], ["finished"], "completed"])
def test_a_bad_events_filter_is_refused(alice_api, receiver, events):
    response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a fox",
                                             "webhook": receiver().url, "webhook_events_filter": events}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["webhook_events_filter"]


def test_a_host_that_now_resolves_inside_is_refused_when_sending(alice, receiver, monkeypatch):
    hook = receiver()
    job = completed_job(alice, f"https://hooks.example.test:{hook.port}/hook")  # public when it was submitted
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: real(
        "127.0.0.1" if host == "hooks.example.test" else host, *args, **kwargs))  # its DNS changed since
    delivery = job.webhook_deliveries.get()

    attempt = webhooks.deliver(delivery.pk, job_body)

    delivery.refresh_from_db()
    assert hook.requests == [] and "internal address (127.0.0.1)" in attempt.error
    assert delivery.status == WebhookStatus.FAILED  # not retried


# --- the secret, the user's view, the admin, the safety net ---------------------------------------------------

def test_rotating_the_secret_changes_the_signature(alice, alice_api, receiver):
    old = alice_api.get("/api/account/webhook-secret/").json()["secret"]
    assert old.startswith("whsec_") and alice_api.get("/api/account/webhook-secret/").json()["secret"] == old
    hook = receiver(500)
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()
    webhooks.deliver(delivery.pk, job_body)

    new = alice_api.post("/api/account/webhook-secret/").json()["secret"]
    webhooks.deliver(delivery.pk, job_body)

    assert new != old and new.startswith("whsec_")
    before, after = hook.requests
    assert before.headers["webhook-signature"] != after.headers["webhook-signature"]
    assert verify(old, before) and verify(new, after)
    with pytest.raises(WebhookVerificationError):
        verify(old, after)


def test_the_owner_sees_every_attempt_and_nobody_else_does(alice, alice_api, bob_api, receiver):
    hook = receiver(Answer(500, body=b"try later"))
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()
    webhooks.deliver(delivery.pk, job_body)
    webhooks.deliver(delivery.pk, job_body)

    response = alice_api.get(f"/api/jobs/{job.pk}/webhooks/")

    assert response.status_code == 200
    (shown,) = response.json()
    assert (shown["webhook_id"], shown["event"], shown["status"], shown["url"]) == (
        delivery.webhook_id, "completed", "delivered", hook.url)
    assert [(a["number"], a["status_code"], a["response_excerpt"]) for a in shown["attempts"]] == [
        (1, 500, "try later"), (2, 200, "thanks")]
    assert bob_api.get(f"/api/jobs/{job.pk}/webhooks/").status_code == 404


def test_an_admin_redelivers_a_failed_delivery_under_its_id(alice, admin_client, receiver):
    hook = receiver(404)
    job = completed_job(alice, hook.url)
    delivery = job.webhook_deliveries.get()
    webhooks.deliver(delivery.pk, job_body)
    changelist = reverse("admin:generation_webhookdelivery_changelist")
    assert admin_client.get(reverse("admin:generation_webhookdelivery_change", args=[delivery.pk])).status_code == 200

    response = admin_client.post(changelist, {"action": "redeliver", "_selected_action": [delivery.pk]})
    attempt = webhooks.deliver(delivery.pk, job_body)

    assert response.status_code == 302 and attempt.number == 2 and attempt.status_code == 200
    assert [r.headers["webhook-id"] for r in hook.requests] == [delivery.webhook_id] * 2
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.DELIVERED


def test_deliveries_whose_message_was_lost_are_sent_again(alice, monkeypatch, settings):
    queue = f"webhooks.test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(webhooks, "QUEUE", queue)
    job = completed_job(alice, "http://127.0.0.1:9/hook")
    lost = job.webhook_deliveries.get()
    webhooks.queue(job, "completed")  # due just now: its message may still be on its way
    WebhookDelivery.objects.filter(pk=lost.pk).update(next_attempt_at=timezone.now() - timedelta(hours=1))
    try:
        assert webhooks.resend_lost() == 1
        assert brokers.job_messages(queue, {webhooks.TASK}) == {(str(lost.pk), 0)}
        assert webhooks.resend_lost() == 0  # the broker holds it now
    finally:
        brokers.client().delete(queue)


def test_deleting_a_job_deletes_its_deliveries_and_attempts(alice, receiver):
    job = completed_job(alice, receiver().url)
    webhooks.deliver(job.webhook_deliveries.get().pk, job_body)
    job.delete()
    assert not WebhookDelivery.objects.exists()


# --- end to end ---------------------------------------------------------------------------------------------

@pytest.fixture
def webhooks_worker(live_workers, tmp_path):
    """The Procfile's webhooks worker beside the pools, allowed to reach loopback, retrying within a second."""
    brokers.client().delete(webhooks.QUEUE)
    stack = Stack(["webhooks"], worker_env(WEBHOOK_ALLOWED_HOSTS="127.0.0.1", WEBHOOK_RETRY_DELAY="0.2"),
                  tmp_path / "webhooks.log")
    try:
        stack.wait_for(lambda: " ready." in stack.output(), 60, "the webhooks worker")
        yield stack
    finally:
        stack.stop()


def test_a_job_run_by_the_workers_is_delivered_by_the_webhooks_worker(alice, alice_api, webhooks_worker,
                                                                      receiver):
    hook = receiver(503)
    response = alice_api.post("/api/jobs/", {"job_type": "sdxl_image_fast", "prompt": "a red kite", "num_images": 3,
                                             "webhook": hook.url}, format="json")
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]

    webhooks_worker.wait_for(lambda: WebhookDelivery.objects.filter(job_id=job_id, status="delivered").exists(),
                             120, "the completed webhook to be delivered")

    delivery = WebhookDelivery.objects.get(job_id=job_id)  # completed only: the default filter
    assert [a.status_code for a in delivery.attempts.all()] == [503, 200]
    assert [r.headers["webhook-id"] for r in hook.requests] == [delivery.webhook_id] * 2
    payload = verify(webhooks.secret(alice), hook.requests[-1])
    assert payload["id"] == job_id and payload["status"] == "completed" and len(payload["images"]) == 3
