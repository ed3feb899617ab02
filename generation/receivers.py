"""Signal receivers: a worker's job outcome into rows, deleted rows' files out of storage, and the
negative-term cache kept fresh."""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from . import credits, negative_prompts, outcomes, scheduler, storage
from .models import Account, Image, NegativeTerm, ReferenceImage, Video
from .signals import job_completed, job_failed


@receiver(job_completed)
def on_job_completed(sender, job, outputs, metadata, fields, **kwargs):
    """A worker finished `job`: its rows and final status (True if the job moved)."""
    return outcomes.record_completion(job.pk, outputs, metadata, fields, release=job.releases)


@receiver(job_failed)
def on_job_failed(sender, job, error, metadata, fields, refund=True, **kwargs):
    """A worker gave up on `job`: failed with `error`, refunded unless the failure was the user's (True if
    the job moved)."""
    return outcomes.record_failure(job.pk, error, metadata, fields, release=job.releases, refund=refund)


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


@receiver(post_save, sender=get_user_model())
def give_sign_up_credits(sender, instance, created, raw=False, **kwargs):
    """Every new user, however created (sign-up page, admin, createsuperuser, a shell), gets an account
    with OURVIDZ_SIGNUP_CREDITS."""
    if created and not raw:
        credits.account(instance)


@receiver(post_save, sender=Account)
@receiver(post_save, sender=get_user_model())
def retier_waiting_jobs(sender, instance, update_fields=None, **kwargs):
    """An admin changed a user's tier (or staff status): their waiting jobs follow at once."""
    if sender is not Account and kwargs.get("created"):
        return  # a new user has no jobs
    if update_fields is not None and not {"tier", "is_staff"} & set(update_fields):
        return  # e.g. a login writing last_login
    scheduler.retier(instance.user if sender is Account else instance)


post_save.connect(negative_prompts.forget_terms, sender=NegativeTerm)
post_delete.connect(negative_prompts.forget_terms, sender=NegativeTerm)
