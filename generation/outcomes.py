"""How a job ends: rows for its files and its final status, written in one transaction.

Workers report through the job_completed / job_failed signals (generation.receivers passes them
here); housekeeping calls these functions directly. Each returns whether the job moved, so a
re-delivered report, or one about a job cancelled meanwhile, changes nothing.
"""

from django.db import transaction
from django.db.models.functions import Now

from . import credits, events, scheduler, webhooks
from .models import Image, Job, JobStatus, Video, WebhookEvent


def record_completion(job_id, outputs, metadata, fields, release=None):
    """Write one Image per picture or the Video (`outputs`: generation.signals.StoredOutput), then
    mark the job completed. False when the job was no longer processing (cancelled while finishing:
    the worker discards the files), or, with `release`, when it runs under a later release (taken back
    from a worker thought gone, and sent again): the run that finishes last is not the one recorded."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status != JobStatus.PROCESSING or (release is not None and job.releases != release):
            return False
        rows = {Image: [], Video: []}
        for output in outputs:
            common = {
                "job": job, "user_id": job.user_id, "prompt": job.prompt, "bucket": output.bucket,
                "thumbnail_path": output.thumbnail_path, "quality": job.quality, "format": job.format,
                "width": output.width, "height": output.height, "size_bytes": output.size_bytes,
                "metadata": output.metadata, "created_at": Now(),  # the database's clock, not the worker's
            }
            if output.kind == "video":
                rows[Video].append(Video(**common, video_path=output.path, duration=output.metadata.get("duration", 0),
                                         fps=output.metadata.get("fps", 0),
                                         frame_count=output.metadata.get("frame_count", 0)))
            else:
                rows[Image].append(Image(**common, image_index=output.index, image_path=output.path,
                                         seed=output.metadata.get("seed")))
        for model, assets in rows.items():
            if assets:
                # Keyed by (job, index): a re-run task overwrites its rows instead of adding more; one
                # statement for all of a job's files.
                keys = ["job", "image_index"] if model is Image else ["job"]
                model.objects.bulk_create(assets, update_conflicts=True, unique_fields=keys, update_fields=[
                    f.name for f in model._meta.concrete_fields
                    if not f.primary_key and f.name not in (*keys, "created_at")])
        moved = Job.move(job.pk, JobStatus.COMPLETED, progress=1.0, metadata={**job.metadata, **metadata},
                         **fields)
        if moved:
            webhooks.queue(job, WebhookEvent.OUTPUT, WebhookEvent.COMPLETED)
            events.publish_on_commit(job)
            transaction.on_commit(lambda: scheduler.kick(job.queue))  # its worker is free
    return moved


def record_failure(job_id, error, metadata, fields, release=None, refund=True):
    """Mark the job failed with `error`, the message its user reads, and give its credits back unless the
    failure was the user's (`refund` False). False when it had already ended (completed, cancelled or
    failed), or, with `release`, runs under a later release."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        only_if = None if release is None else {"releases": release}
        moved = Job.move(job.pk, JobStatus.FAILED, only_if=only_if, error_message=error,
                         metadata={**job.metadata, **metadata}, **fields)
        if moved and refund:
            credits.refund(job, "the job failed: " + error)
        if moved:
            webhooks.queue(job, WebhookEvent.COMPLETED)
            events.publish_on_commit(job)
            transaction.on_commit(lambda: scheduler.kick(job.queue))
    return moved
