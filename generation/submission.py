"""Turning a validated request into a queued Job; cancel and retry; clearing finished jobs off the Workspace.

The API validates (generation.api.serializers.JobRequestSerializer); these functions take what it
validated and act. A job waits in the database; generation.scheduler releases it to its pool.
"""

import hashlib
import json
import secrets

from django.db import IntegrityError, transaction

from . import credits, events, job_types, negative_prompts, quotas, scheduler, webhooks
from .metadata import JobMetadata
from .models import FINISHED, Job, JobStatus, WebhookEvent, tier_of


def new_seed():
    """A seed from the OS's secure random source (clock-based seeds collide within a second)."""
    return secrets.randbelow(job_types.MAX_SEED + 1)


class KeyReused(Exception):
    """An Idempotency-Key sent again with another body: a client's mistake, answered 409, never a replay."""

    def __init__(self, key):
        super().__init__(f"The Idempotency-Key {key!r} was used with another request body; use a new key for a new "
                         "job, or send the first request again to get its job.")


def fingerprint(body):
    """A digest of a submission's parsed body (a dict, or a form's QueryDict): the same keys and values give the
    same digest whatever their order or the JSON's spacing."""
    if hasattr(body, "lists"):
        body = dict(body.lists())
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def existing(user, idempotency_key, digest):
    """The user's job submitted with `idempotency_key`, or None; KeyReused if it was submitted with a body
    other than the one of `digest` (`fingerprint`). The API looks before it validates, so a client retrying a
    request gets its first job even if the request would no longer validate."""
    if not idempotency_key:
        return None
    job = Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
    # A job from before digests were kept has none: it is returned whatever the body, as it was then.
    if job and job.request_digest and job.request_digest != digest:
        raise KeyReused(idempotency_key)
    return job


def submit(user, validated, idempotency_key=None, digest=""):
    """Record the job `validated` describes; once committed the scheduler may release it. The broker
    being down changes nothing here: the job waits in the database. Returns (job, created):
    created is False when a concurrent request with the same `idempotency_key` and body (`digest`) recorded
    its job first (callers look for an earlier one with `existing` before they validate)."""
    job = build_job(user, **validated)
    job.idempotency_key = idempotency_key or None
    job.request_digest = digest if idempotency_key else ""
    try:
        _record(job)
    except IntegrityError:
        # A concurrent request with the same key won the insert (the unique constraint decides).
        if found := existing(user, idempotency_key, digest):
            return found, False
        raise
    # Immediately in autocommit mode; inside a caller's transaction, only once it commits.
    transaction.on_commit(lambda: _release(job))
    events.publish_on_commit(job)  # the user's other open pages show the queued job at once
    return job, True


def _record(job):
    """Insert `job` and charge it in one transaction: nothing is written when the credits or a quota refuse
    it (credits.InsufficientCredits, QuotaExceeded). Both hold under any concurrency: the charge locks the
    user's account row until the commit, so one user's submissions pass it one at a time, and the count of
    their jobs waiting or running, read after it, sees every job recorded before."""
    with transaction.atomic():
        job.save(force_insert=True)
        credits.charge(job)
        quotas.check_active(job.user, job.tier)


def quote(user, validated):
    """What submitting `validated` would cost and when it would start, creating nothing: the job is recorded
    inside a transaction that is rolled back, so that the scheduler places it exactly as it would a real one.
    Returns a dict: price, charged, balance, expected seconds, the outlook, and why it would be refused."""
    job = build_job(user, **validated)
    account = credits.account(user)
    exempt = credits.exemption(user, account)
    refused = ""
    if not exempt and account.credits < job.credits:
        refused = str(credits.InsufficientCredits(account.credits, job.credits))
    with transaction.atomic():
        job.save(force_insert=True)
        try:
            quotas.check_active(user, job.tier)
        except quotas.QuotaExceeded as exc:
            refused = refused or str(exc)
        outlook = scheduler.outlooks([job])[job.pk]
        transaction.set_rollback(True)
    return {"job_type": job.job_type, "price": job.credits, "charged": not exempt, "balance": account.credits,
            "expected_generation_seconds": job.expected_seconds, "queue_position": outlook.position,
            "estimated_start_seconds": outlook.start_seconds, "estimated_finish_seconds": outlook.finish_seconds,
            "waiting_reason": outlook.waiting_reason, "refused": refused}


def _release(job):
    """Let the scheduler release what it can; `job` learns whether it went (its answer shows it)."""
    for released in scheduler.kick(job.queue):
        if released.pk == job.pk:
            job.released_at, job.releases = released.released_at, released.releases


def build_job(user, job_type, prompt, negative_prompt="", num_images=1, seed=None, aspect_ratio="",
              reference_image=None, reference_type="", reference_strength=None, retry_of=None, webhook="",
              webhook_events_filter=webhooks.DEFAULT_EVENTS):
    """An unsaved Job with everything the worker needs: size, steps, seed, negative prompt."""
    jt = job_types.get(job_type)
    params = job_types.render_params(jt, aspect_ratio or None)
    negative = negative_prompts.for_job(jt, prompt, negative_prompt)
    metadata: JobMetadata = {"user_negative_prompt": negative_prompt}
    if jt.pool == "sdxl":
        metadata.update(multi_party=negative.multi_party, negative_terms_dropped=negative.dropped)
    return Job(
        user=user, job_type=jt.name, format=jt.format, quality=jt.quality, model_type=jt.model_type,
        queue=jt.queue, status=JobStatus.QUEUED, prompt=prompt, negative_prompt=negative.text,
        seed=new_seed() if seed is None else seed, num_images=num_images, aspect_ratio=aspect_ratio or "",
        width=params["width"], height=params["height"], steps=params["steps"], guidance=params["guidance"],
        frames=params["frames"], reference_image=reference_image, reference_type=reference_type or "",
        reference_strength=reference_strength if reference_image else None,
        expected_seconds=jt.expected_total(num_images), credits=jt.credits, metadata=metadata,
        retry_of=retry_of, tier=tier_of(user), webhook=webhook, webhook_events_filter=list(webhook_events_filter),
    )


def cancel(job, queued_only=False):
    """Cancel a queued or running job (with `queued_only`, a queued one only); a running one stops at its next
    step, a waiting one needs no broker at all, and is refunded. True if it moved."""
    with transaction.atomic():
        waiting = Job.move(job.pk, JobStatus.CANCELLED, only_if={"status": JobStatus.QUEUED})
        moved = waiting or (not queued_only and Job.move(job.pk, JobStatus.CANCELLED))
        if waiting:
            credits.refund(job, "cancelled before it started")
        if moved:
            webhooks.queue(job, WebhookEvent.COMPLETED)
    if moved:
        events.publish_on_commit(job)
        if job.released_at is not None:
            transaction.on_commit(lambda: scheduler.kick(job.queue))  # it freed its place in the broker
    return moved


def cancel_waiting(user):
    """Cancel every one of `user`'s queued jobs, each as `cancel` does (refund, webhook, event); running ones go
    on. Returns (cancelled, skipped): the jobs cancelled, and those that started or ended meanwhile."""
    cancelled, skipped = [], []
    for job in Job.objects.filter(user=user, status=JobStatus.QUEUED).order_by("created_at"):
        (cancelled if cancel(job, queued_only=True) else skipped).append(job)
    return cancelled, skipped


def clear(job):
    """Take a finished job off its owner's Workspace (the Library and the API keep it). True if it is
    cleared; False if it has not finished."""
    if not Job.objects.filter(pk=job.pk, status__in=FINISHED).update(cleared=True):
        return False
    events.publish_on_commit(job)  # the owner's other open Workspaces drop its card too
    return True


# Clearing tells the user's other open pages about this many of the jobs cleared, the newest: a page shows the
# latest few finished jobs and those that finished while it was open.
CLEARED_EVENTS = 100


def clear_finished(user):
    """Take all of `user`'s finished jobs off the Workspace (their other open Workspaces drop the cards too);
    returns how many were still on it."""
    finished = Job.objects.filter(user=user, status__in=FINISHED, cleared=False)
    with transaction.atomic():
        shown = list(finished.order_by("-created_at")[:CLEARED_EVENTS].only("pk", "user_id"))
        count = finished.update(cleared=True)
        for job in shown:
            events.publish_on_commit(job)
    return count


def retry(job):
    """Queue a new job with the same parameters as `job`, pointing back at it (charged as a submission)."""
    new = build_job(
        job.user, job.job_type, job.prompt, negative_prompt=job.metadata.get("user_negative_prompt", ""),
        num_images=job.num_images, seed=job.seed, aspect_ratio=job.aspect_ratio,
        reference_image=job.reference_image, reference_type=job.reference_type,
        reference_strength=job.reference_strength, retry_of=job, webhook=job.webhook,
        webhook_events_filter=job.webhook_events_filter,
    )
    _record(new)
    transaction.on_commit(lambda: scheduler.kick(new.queue))
    events.publish_on_commit(new)  # as for a submission: the user's other open pages show it at once
    return new
