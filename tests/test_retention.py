"""Retention: outputs are deleted RETENTION_DAYS (per tier) after they were made, files and rows, unless their
owner keeps them; the expiry is shown in the API and the Library."""

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import Stack, worker_env
from PIL import Image as PILImage

from generation import retention, storage, submission
from generation.models import Account, Image, Job, JobStatus, Tier, Video, WebhookDelivery
from generation.worker import images, runtime
from ourvidz.celery import app


def finished(user, days_old, num_images=1):
    """A job of `user` rendered by the real runtime into real files, made `days_old` days ago; its images."""
    job = submission.build_job(user, "sdxl_image_fast", "a lighthouse", num_images=num_images)
    job.save()

    def generate(run):
        picture = PILImage.new("RGB", (run.job.width, run.job.height), "teal")
        return [runtime.Output(images.encode_png(picture, "p"), "png", picture, picture.width, picture.height,
                               index=i) for i in range(num_images)]

    runtime.run(job.pk, "sdxl", generate)
    made = timezone.now() - timedelta(days=days_old)
    Image.objects.filter(job=job).update(created_at=made)
    return list(Image.objects.filter(job=job).order_by("image_index"))


def stored(asset):
    return storage.get_storage().exists(asset.bucket, asset.path)


def test_forever_by_default_and_per_tier_when_set(alice, settings):
    image, = finished(alice, days_old=400)
    assert settings.RETENTION_DAYS == [0] and retention.expires_at(image) is None  # kept forever unless set
    settings.RETENTION_DAYS = [30, 90]
    assert retention.expires_at(image) == image.created_at + timedelta(days=30)
    Account.objects.filter(user=alice).update(tier=Tier.PRIORITY)
    assert retention.expires_at(image) == image.created_at + timedelta(days=90)
    image.keep = True
    assert retention.expires_at(image) is None


def test_expired_outputs_go_with_their_files_and_kept_ones_stay(alice, bob, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.RETENTION_DAYS = [30, 90]
    Account.objects.filter(user=bob).update(tier=Tier.PRIORITY)
    old, kept = finished(alice, days_old=31, num_images=3)[:2]
    Image.objects.filter(pk=kept.pk).update(keep=True)
    recent, = finished(alice, days_old=29)
    bobs, = finished(bob, days_old=31)  # priority: 90 days
    assert all(stored(image) for image in (old, kept, recent, bobs))
    for image, days_old in ((old, 31), (recent, 29), (bobs, 31)):  # each job's webhook records, as old
        WebhookDelivery.objects.create(job_id=image.job_id, event="completed", url="https://hooks.example/x",
                                       created_at=timezone.now() - timedelta(days=days_old),
                                       retry_until=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):  # files go once each batch commits
        # old and its unkept sibling; the webhook records of old's job
        assert retention.delete_expired() == {"images": 2, "videos": 0, "webhook_deliveries": 1}
    assert set(WebhookDelivery.objects.values_list("job_id", flat=True)) == {recent.job_id, bobs.job_id}
    left = set(Image.objects.values_list("pk", flat=True))
    assert left == {kept.pk, recent.pk, bobs.pk}
    assert not stored(old) and not storage.get_storage().exists(old.bucket, old.thumbnail_path)
    assert stored(kept) and stored(recent) and stored(bobs)
    assert Job.objects.get(pk=old.job_id).status == JobStatus.COMPLETED  # the job stays, for ledger and usage
    assert retention.delete_expired() == {"images": 0, "videos": 0, "webhook_deliveries": 0}  # nothing more


def test_keep_is_set_with_a_patch_and_nothing_else_changes(alice, alice_api, bob_api, settings):
    settings.RETENTION_DAYS = [30]
    image, = finished(alice, days_old=1)
    shown = alice_api.get(f"/api/images/{image.pk}/").json()
    assert shown["keep"] is False and shown["expires_at"] is not None
    kept = alice_api.patch(f"/api/images/{image.pk}/", {"keep": True, "prompt": "changed"}, format="json")
    assert kept.status_code == 200 and kept.json()["keep"] is True and kept.json()["expires_at"] is None
    image.refresh_from_db()
    assert image.keep and image.prompt == "a lighthouse"
    refused = alice_api.patch(f"/api/images/{image.pk}/", {"keep": "yes"}, format="json")
    assert refused.status_code == 400 and "keep" in refused.json()
    assert alice_api.put(f"/api/images/{image.pk}/", {"keep": False}, format="json").status_code == 405
    assert bob_api.patch(f"/api/images/{image.pk}/", {"keep": False}, format="json").status_code == 404


def test_the_library_shows_when_it_goes_and_keeps_it(alice, alice_client, settings):
    settings.RETENTION_DAYS = [30]
    image, = finished(alice, days_old=1)
    page = alice_client.get(f"/library/image/{image.pk}/").content.decode()
    expires = (image.created_at + timedelta(days=30)).strftime("%b %-d, %Y")
    assert f"Deleted automatically on {expires}." in page
    assert alice_client.post(f"/library/image/{image.pk}/keep/", {"keep": "1"}).status_code == 302
    assert "Kept: never deleted automatically." in alice_client.get(f"/library/image/{image.pk}/").content.decode()
    image.refresh_from_db()
    assert image.keep


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_the_housekeeping_worker_deletes_a_real_video_past_its_time(alice, settings, tmp_path, live_workers):
    job, _ = submission.submit(alice, {"job_type": "video_fast", "prompt": "waves"})
    video = Video.objects.get(job=live_workers.wait_for_job(job.pk))
    assert stored(video)
    Video.objects.filter(pk=video.pk).update(created_at=timezone.now() - timedelta(days=31))
    housekeeping = Stack(["housekeeping"], worker_env(RETENTION_DAYS="30"), tmp_path / "housekeeping.log")
    try:
        app.send_task("generation.expire_outputs", queue="maintenance")
        housekeeping.wait_for(lambda: not Video.objects.filter(pk=video.pk).exists(), 60, "the video's deletion")
    finally:
        housekeeping.stop()
    assert not stored(video)
