"""Live job updates for the web pages.

Whoever changes a job (the worker's runtime, the outcome recorders, a cancel) calls
`publish_on_commit(job)`: once the change is committed, the job's id goes out on its owner's Redis
channel, and the server-sent-events view relays the job's current state, read from the database, to
that user's open pages. Published after commit, a reader never sees an older state than the event
announced. Publishing never fails a job: Redis trouble only costs liveness, and the pages fall back
to polling.
"""

import base64
import json
import logging
import time

from django.db import transaction

from .brokers import client

log = logging.getLogger(__name__)


def channel(user_id):
    return f"ourvidz:jobs:{user_id}"


def publish_on_commit(job):
    """Tell `job`'s owner's open pages that the job changed, once the current transaction commits
    (at once in autocommit mode)."""
    user_id, job_id = job.user_id, job.pk
    transaction.on_commit(lambda: _publish(user_id, job_id))


def _publish(user_id, job_id):
    try:
        client().publish(channel(user_id), str(job_id))
    except Exception:  # liveness only; the database holds the truth
        log.warning("could not publish an update of job %s", job_id, exc_info=True)


def publish_preview(job, webp, step, total):
    """Send a picture of `job` while it renders (WebP bytes, at step `step` of `total`) to its owner's open
    pages, at once: it is never stored, and a page that is not open misses it."""
    message = {"id": str(job.pk), "step": step, "total_steps": total,
               "image": "data:image/webp;base64," + base64.b64encode(webp).decode()}
    client().publish(channel(job.user_id), json.dumps(message))


def is_preview(message):
    """Whether a message from changed_jobs() is a preview (JSON) rather than a job id."""
    return message.startswith("{")


def changed_jobs(user_id, seconds, heartbeat=10.0):
    """Ids of the user's jobs as they change (and their previews: is_preview()), for `seconds`, and None
    every `heartbeat` seconds without news (so a stream can show it is alive). Subscribed on return, so
    nothing published after this call is missed."""
    pubsub = client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel(user_id))
    return _relay(pubsub, seconds, heartbeat)


def _relay(pubsub, seconds, heartbeat):
    try:
        end = time.monotonic() + seconds
        quiet_since = time.monotonic()
        while time.monotonic() < end:
            message = pubsub.get_message(timeout=min(1.0, max(0.0, end - time.monotonic())))
            if message:
                quiet_since = time.monotonic()
                yield message["data"].decode()
            elif time.monotonic() - quiet_since >= heartbeat:
                quiet_since = time.monotonic()
                yield None
    finally:
        pubsub.close()
