"""Webhooks: a job's changes POSTed to the URL its owner gave, signed as Standard Webhooks sign them.

Whoever changes a job (the worker's runtime, the outcome recorders, a cancel) calls `queue(job, *events)` in
the transaction of the change: when the job's events filter asks for one of them, a WebhookDelivery row is
written there (an outbox), and once it commits a message on the `webhooks` queue asks the webhooks worker to
`deliver` it. An attempt that times out, cannot connect, or gets a 429 or 5xx is tried again later, under
the same `webhook-id`, with exponential backoff and jitter, for WEBHOOK_RETRY_FOR seconds; another answer
ends it. The row is the record: `resend_lost` sends again what is due but no longer in the broker.

Nothing is sent to an address inside the network (loopback, private, link-local, the cloud metadata
address, multicast, reserved) unless its host is in WEBHOOK_ALLOWED_HOSTS: checked when the job is
submitted, and again when sending, on the very address connected to (resolved once, checked, then used).
"""

import base64
import http.client
import ipaddress
import logging
import random
import re
import secrets as random_secrets
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone
from standardwebhooks import Webhook

from ourvidz.celery import app as celery_app

from . import brokers, clock, credits
from .models import Account, WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookStatus

log = logging.getLogger(__name__)

EVENTS = [event.value for event in WebhookEvent]
DEFAULT_EVENTS = [WebhookEvent.COMPLETED.value]
QUEUE = "webhooks"
TASK = "webhooks.deliver"  # generation.api.webhooks: the body is the job as the API shows it
MAX_DELAY = 3600  # seconds: the longest wait between two attempts
# An attempt under way holds its delivery this long (its task's time limit is shorter), so that no other
# message starts it meanwhile; a worker that died with it leaves it due again after that.
ATTEMPT_LEASE = timedelta(seconds=120)
EXCERPT_BYTES = 1024  # read at most this much of a response
EXCERPT_CHARS = 200  # and keep this much of it


class Refused(Exception):
    """A webhook URL or address that deliveries may not go to; the message says why."""


class Unresolved(Refused):
    """A webhook host that does not resolve (now: a later attempt may find it)."""


@dataclass
class Outcome:
    """What one attempt came to."""

    status_code: int | None = None
    error: str = ""
    excerpt: str = ""
    address: str | None = None
    retry: bool = False

    @property
    def delivered(self):
        return self.status_code is not None and 200 <= self.status_code < 300


# --- where deliveries may go ----------------------------------------------------------------------------

def allowlisted(host):
    """Whether an administrator allowed `host` (WEBHOOK_ALLOWED_HOSTS): plain http, internal addresses."""
    return host.lower().rstrip(".") in {h.lower().rstrip(".") for h in settings.WEBHOOK_ALLOWED_HOSTS}


def public(address):
    """Whether `address` (an IP address string) is on the public internet: not loopback, private, link-local
    (169.254.169.254, the cloud metadata address, is), shared, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback
                                 or ip.is_private or ip.is_unspecified)


def check_url(url):
    """Refused unless `url` is one deliveries may go to: https (http only to an allowlisted host), no user
    name or password in it, a host that resolves to public addresses only (any, if allowlisted)."""
    parts = _parts(url)
    resolve(parts.hostname, parts.port or _default_port(parts.scheme))


def _parts(url):
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise Refused("Must be an https:// URL.")
    if parts.scheme == "http" and not allowlisted(parts.hostname):
        raise Refused("Must be an https:// URL (http only to hosts the administrator allows).")
    if parts.username is not None or parts.password is not None:
        raise Refused("Must not hold a user name or password.")
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise Refused("Has an invalid port.") from exc
    return parts


def _default_port(scheme):
    return 443 if scheme == "https" else 80


def resolve(host, port):
    """The addresses `host` resolves to, each allowed; Refused when one is not (a name that resolves to an
    internal address among others must not be used to reach it) or when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolved(f"The host {host} does not resolve.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not allowlisted(host):
        for address in addresses:
            if not public(address):
                raise Refused(f"The host {host} is an internal address ({address}); webhooks go to public "
                              "addresses only.")
    return addresses


# --- the outbox -----------------------------------------------------------------------------------------

def queue(job, *events):
    """In the transaction that changed `job` in ways `events` name: record the delivery its webhook asks for
    (None if none), sent once the transaction commits. A change is one delivery, named by the last of its
    events that the filter holds; a progress step while another progress delivery waits is none."""
    wanted = [event for event in events if event in job.webhook_events_filter]
    if not job.webhook or not wanted:
        return None
    event = wanted[-1]
    pending_progress = WebhookDelivery.objects.filter(job=job, event=WebhookEvent.PROGRESS,
                                                      status=WebhookStatus.PENDING)
    if event == WebhookEvent.PROGRESS and pending_progress.exists():
        return None
    # Due by the database's clock, which the webhooks worker compares with: this host's may be off.
    delivery = WebhookDelivery(job=job, event=event, url=job.webhook, created_at=Now(), next_attempt_at=Now(),
                               retry_until=Now() + timedelta(seconds=settings.WEBHOOK_RETRY_FOR))
    # A concurrent progress step that won the race leaves this one unwritten (the constraint); its message
    # then finds nothing.
    WebhookDelivery.objects.bulk_create([delivery], ignore_conflicts=event == WebhookEvent.PROGRESS)
    transaction.on_commit(lambda: post(delivery.pk))
    return delivery


def post(delivery_id, countdown=None):
    """Ask the webhooks worker to deliver; the row stays due if the broker is down (`resend_lost`)."""
    try:
        celery_app.send_task(TASK, args=[str(delivery_id)], queue=QUEUE, countdown=countdown)
    except Exception:
        log.warning("could not send webhook delivery %s to the broker; it is sent again later", delivery_id,
                    exc_info=True)


def resend_lost():
    """Send again the deliveries due for SCHEDULER_LOST_AFTER seconds whose message the broker holds no more
    (lost in a broker restart, or never sent). Returns how many."""
    cutoff = clock.since(timedelta(seconds=settings.SCHEDULER_LOST_AFTER))
    due = [str(pk) for pk in WebhookDelivery.objects.filter(status=WebhookStatus.PENDING, next_attempt_at__lt=cutoff)
           .values_list("pk", flat=True)[:1000]]
    if not due:
        return 0
    present = {delivery_id for delivery_id, _ in brokers.job_messages(QUEUE, {TASK})}
    lost = [delivery_id for delivery_id in due if delivery_id not in present]
    if lost:
        log.warning("%d webhook deliveries are due and not in the broker; sending them again", len(lost))
    for delivery_id in lost:
        post(delivery_id)
    return len(lost)


def redeliver(deliveries):
    """Send these deliveries again now, under their own ids and with their bodies, retried as new ones are.
    A progress delivery whose job has another one waiting is left as it is. Returns how many."""
    again = 0
    for delivery in deliveries:
        try:
            with transaction.atomic():
                again += WebhookDelivery.objects.filter(pk=delivery.pk).update(
                    status=WebhookStatus.PENDING, next_attempt_at=Now(), finished_at=None,
                    retry_until=Now() + timedelta(seconds=settings.WEBHOOK_RETRY_FOR))
        except IntegrityError:
            continue
        transaction.on_commit(lambda pk=delivery.pk: post(pk))
    return again


# --- sending --------------------------------------------------------------------------------------------

def deliver(delivery_id, render):
    """One attempt at a delivery that is due (none otherwise: delivered, given up, not yet due, or under way
    elsewhere); `render(job)` gives the body at the first attempt. Returns the WebhookAttempt, or None."""
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookStatus.PENDING,
                                             next_attempt_at__lte=Now()).update(next_attempt_at=Now() + ATTEMPT_LEASE)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("job").get(pk=delivery_id)
    if not delivery.body:
        delivery.body = render(delivery.job)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(body=delivery.body)
    number = delivery.attempts.count() + 1
    started_at, start = timezone.now(), time.monotonic()
    headers = signed_headers(delivery.webhook_id, started_at, delivery.body, secret(delivery.job.user))
    outcome = send(delivery.url, delivery.body, headers)
    return record(delivery, number, started_at, time.monotonic() - start, outcome)


def signed_headers(webhook_id, timestamp, body, user_secret):
    """The Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(user_secret).sign(webhook_id, timestamp, body),
        "Content-Type": "application/json",
        "User-Agent": "OurVidz-Webhooks/1",
    }


def send(url, body, headers):
    """POST `body` to `url` once: to an address checked when resolved, no redirect followed, short timeouts,
    at most EXCERPT_CHARS of the answer kept."""
    outcome = Outcome()
    try:
        parts = _parts(url)
        port = parts.port or _default_port(parts.scheme)
        outcome.address = resolve(parts.hostname, port)[0]
        connection = _pinned_connection(parts, port, outcome.address)
        try:
            path = parts.path or "/"
            connection.request("POST", f"{path}?{parts.query}" if parts.query else path, body=body.encode(),
                               headers=headers)
            response = connection.getresponse()
            outcome.status_code = response.status
            outcome.excerpt = excerpt(response.read(EXCERPT_BYTES))
            location = response.getheader("Location")
        finally:
            connection.close()
    except Refused as exc:
        # A name may resolve again later; an internal address is refused for good.
        outcome.error, outcome.retry = str(exc), isinstance(exc, Unresolved)
        return outcome
    except (TimeoutError, SoftTimeLimitExceeded) as exc:
        outcome.error, outcome.retry = f"timed out ({exc or 'no answer in time'})", True
        return outcome
    except (OSError, http.client.HTTPException) as exc:
        outcome.error, outcome.retry = f"{type(exc).__name__}: {exc}"[:300], True
        return outcome
    code = outcome.status_code
    if 300 <= code < 400:
        outcome.error = f"a redirect{f' to {location}' if location else ''} is not followed"[:300]
    elif code == 429 or code >= 500:
        outcome.retry = True
    elif not outcome.delivered:
        outcome.error = f"answered {code}: not retried"
    return outcome


def _pinned_connection(parts, port, address):
    """An HTTP(S) connection to `parts`' host that connects to `address` whatever the name resolves to by
    then; the name still goes in the Host header and, with https, in SNI and the certificate check."""
    timeout = settings.WEBHOOK_READ_TIMEOUT
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)

    def connect(_, __, source_address=None):
        sock = socket.create_connection((address, port), timeout=settings.WEBHOOK_CONNECT_TIMEOUT)
        peer = sock.getpeername()[0]
        if not (allowlisted(parts.hostname) or public(peer)):
            sock.close()
            raise Refused(f"The host {parts.hostname} is an internal address ({peer}).")
        sock.settimeout(timeout)
        return sock

    connection._create_connection = connect  # http.client's own hook for opening the socket
    return connection


def excerpt(data):
    """The start of a response body as one line of text."""
    return re.sub(r"\s+", " ", data.decode("utf-8", "replace")).strip()[:EXCERPT_CHARS]


def backoff(attempt):
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...): WEBHOOK_RETRY_DELAY doubled each
    time up to MAX_DELAY, with jitter (between half and all of it) so that receivers coming back are not
    hit by every retry at once."""
    delay = min(MAX_DELAY, settings.WEBHOOK_RETRY_DELAY * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


def record(delivery, number, started_at, seconds, outcome):
    """Write the attempt and what follows from it: delivered, given up, or the next attempt's time (and its
    message, sent after commit)."""
    now = clock.now()  # retry_until is the database's time
    delay = backoff(number)
    if outcome.retry and now + timedelta(seconds=delay) <= delivery.retry_until:
        fields = {"status": WebhookStatus.PENDING, "next_attempt_at": now + timedelta(seconds=delay)}
    else:
        fields = {"status": WebhookStatus.DELIVERED if outcome.delivered else WebhookStatus.FAILED,
                  "next_attempt_at": None, "finished_at": now}
    with transaction.atomic():
        attempt = WebhookAttempt.objects.create(
            delivery=delivery, number=number, started_at=started_at, seconds=round(seconds, 3),
            address=outcome.address, status_code=outcome.status_code, error=outcome.error[:300],
            response_excerpt=outcome.excerpt)
        # Conditional: redelivered meanwhile by an admin, it is theirs now.
        WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookStatus.PENDING).update(**fields)
        if fields["status"] == WebhookStatus.PENDING:
            transaction.on_commit(lambda: post(delivery.pk, countdown=delay))
    log.info("webhook %s (%s of job %s), attempt %d: %s", delivery.webhook_id, delivery.event, delivery.job_id,
             number, outcome.status_code or outcome.error)
    return attempt


# --- the signing secret ---------------------------------------------------------------------------------

def new_secret():
    """A random signing secret in the Standard Webhooks form: whsec_ and 24 bytes in base64."""
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(24)).decode()


def secret(user):
    """`user`'s signing secret (`whsec_...`), made on first use."""
    account = credits.account(user)
    if not account.webhook_secret:
        # Conditional: of two first uses at once, one secret is kept.
        Account.objects.filter(pk=account.pk, webhook_secret="").update(webhook_secret=new_secret())
        account.refresh_from_db(fields=["webhook_secret"])
    return account.webhook_secret


def rotate_secret(user):
    """Give `user` a new signing secret; attempts from now on are signed with it. Returns it."""
    value = new_secret()
    Account.objects.filter(pk=credits.account(user).pk).update(webhook_secret=value)
    return value
