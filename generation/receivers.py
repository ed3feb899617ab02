"""Receivers that turn a worker's job_completed / job_failed signals into rows."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from . import events, negative_prompts, storage
from .models import Image, Job, JobStatus, NegativeTerm, ReferenceImage, Video
from .signals import job_completed, job_failed


@receiver(job_completed)
def record_results(sender, job, outputs, metadata, fields, **kwargs):
    """Write one Image per picture or the Video, then mark the job completed, in one transaction."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.PROCESSING:
            return  # cancelled while finishing: the runtime discards the files
        for output in outputs:
            common = {
                "user_id": locked.user_id, "prompt": locked.prompt, "title": locked.prompt[:80],
                "bucket": output.bucket, "thumbnail_path": output.thumbnail_path,
                "quality": locked.quality, "format": locked.format, "width": output.width,
                "height": output.height, "size_bytes": output.size_bytes, "metadata": output.metadata,
            }
            # Keyed by (job, index): a re-run task overwrites its rows instead of adding more.
            if output.kind == "video":
                Video.objects.update_or_create(
                    job=locked,
                    defaults={**common, "video_path": output.path, "signed_url": "",
                              "signed_url_expires_at": None, "duration": output.metadata.get("duration", 0),
                              "fps": output.metadata.get("fps", 0),
                              "frame_count": output.metadata.get("frame_count", 0)},
                )
            else:
                Image.objects.update_or_create(
                    job=locked, image_index=output.index,
                    defaults={**common, "image_path": output.path, "seed": output.metadata.get("seed")},
                )
        Job.move(locked.pk, JobStatus.COMPLETED, progress=1.0, metadata={**locked.metadata, **metadata},
                 **fields)
        transaction.on_commit(lambda: events.publish(locked))


@receiver(job_failed)
def record_failure(sender, job, error, metadata, fields, **kwargs):
    """Mark the job failed with a readable message (unless it was cancelled meanwhile)."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        Job.move(locked.pk, JobStatus.FAILED, error_message=error, completed_at=timezone.now(),
                 metadata={**locked.metadata, **metadata}, **fields)
        transaction.on_commit(lambda: events.publish(locked))


@receiver(post_delete, sender=Image)
@receiver(post_delete, sender=Video)
@receiver(post_delete, sender=ReferenceImage)
def delete_files(sender, instance, **kwargs):
    """Remove a deleted row's files once the deletion commits (API, admin and cascades alike)."""
    if sender is ReferenceImage:
        if ReferenceImage.objects.filter(path=instance.path).exists():
            return  # the same upload is still referenced by another row
        files = [(ReferenceImage.BUCKET, instance.path)]
    else:
        files = [(instance.bucket, instance.path), (instance.bucket, instance.thumbnail_path)]
    transaction.on_commit(lambda: [storage.get_storage().delete(bucket, name) for bucket, name in files if name])


post_save.connect(negative_prompts.forget_terms, sender=NegativeTerm)
post_delete.connect(negative_prompts.forget_terms, sender=NegativeTerm)
