"""The operators' view of jobs in the Django admin."""

import pytest
from django.utils import timezone
from PIL import Image as PILImage

from generation import submission
from generation.models import Job, JobStatus
from generation.worker import images, runtime

pytestmark = pytest.mark.django_db


def make_job(user, job_type="sdxl_image_fast", prompt="a prompt", **kwargs):
    job = submission.build_job(user, job_type, prompt, **kwargs)
    job.save()
    return job


def test_job_list_search_and_filters(admin_client, alice):
    fox = make_job(alice, prompt="a red fox")
    owl = make_job(alice, job_type="video_fast", prompt="an owl at night")
    Job.move(owl.pk, JobStatus.PROCESSING, started_at=timezone.now())
    Job.move(owl.pk, JobStatus.COMPLETED)
    page = admin_client.get("/admin/generation/job/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in [str(fox.pk)[:8], "sdxl_image_fast", "video_fast", "sdxl_queue", "wan_queue", "alice"]:
        assert text in html
    searched = admin_client.get("/admin/generation/job/", {"q": "fox"}).content.decode()
    assert str(fox.pk)[:8] in searched and str(owl.pk)[:8] not in searched
    by_id = admin_client.get("/admin/generation/job/", {"q": str(owl.pk)}).content.decode()
    assert str(owl.pk)[:8] in by_id and str(fox.pk)[:8] not in by_id
    by_user = admin_client.get("/admin/generation/job/", {"q": "alice"}).content.decode()
    assert str(owl.pk)[:8] in by_user
    completed = admin_client.get("/admin/generation/job/", {"status__exact": "completed"}).content.decode()
    assert str(owl.pk)[:8] in completed and str(fox.pk)[:8] not in completed


def test_job_page_shows_its_images_with_thumbnails(admin_client, alice):
    job = make_job(alice, num_images=3)

    def generate(run):
        picture = PILImage.new("RGB", (run.job.width, run.job.height), "teal")
        return [runtime.Output(images.encode_png(picture), "png", picture, picture.width, picture.height, index=i)
                for i in range(3)]

    runtime.run(job.pk, "sdxl", generate)
    page = admin_client.get(f"/admin/generation/job/{job.pk}/change/").content.decode()
    assert page.count(".thumb.webp?expires=") == 3
    thumb_url = page.split('<img src="')[1].split('"')[0].replace("&amp;", "&")
    assert admin_client.get(thumb_url).status_code == 200


def test_cancel_and_retry_actions(admin_client, alice, django_capture_on_commit_callbacks):
    queued = make_job(alice)
    failed = make_job(alice, seed=5)
    Job.move(failed.pk, JobStatus.FAILED, error_message="boom")
    admin_client.post("/admin/generation/job/", {"action": "cancel_jobs", "_selected_action": [queued.pk]})
    assert Job.objects.get(pk=queued.pk).status == JobStatus.CANCELLED
    with django_capture_on_commit_callbacks(execute=True) as sent:
        admin_client.post("/admin/generation/job/", {"action": "retry_jobs",
                                                     "_selected_action": [failed.pk, queued.pk]})
    retry = Job.objects.get(retry_of=failed)
    assert retry.status == JobStatus.QUEUED and retry.seed == 5 and len(sent) == 2  # the release and the pages' event
    assert not Job.objects.filter(retry_of=queued).exists()  # only failed jobs are retried


def test_negative_terms_are_editable(admin_client):
    page = admin_client.get("/admin/generation/negativeterm/")
    assert page.status_code == 200 and "bad anatomy" in page.content.decode()


def test_an_admin_sets_a_users_tier_on_their_page_and_their_waiting_jobs_follow(admin_client, alice):
    from generation.models import Tier

    waiting = make_job(alice)
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200 and 'name="account-0-tier"' in html
    form = {name: value for name, value in page.context["adminform"].form.initial.items() if value is not None}
    form.update({
        "username": "alice", "date_joined_0": timezone.localtime(alice.date_joined).strftime("%Y-%m-%d"),
        "date_joined_1": timezone.localtime(alice.date_joined).strftime("%H:%M:%S"), "is_active": "on",
        # Every user has an account (with the sign-up credits) from the start.
        "account-TOTAL_FORMS": "1", "account-INITIAL_FORMS": "1", "account-MIN_NUM_FORMS": "0",
        "account-MAX_NUM_FORMS": "1", "account-0-tier": str(Tier.PRIORITY), "account-0-user": str(alice.pk),
        "account-0-id": str(alice.account.pk),
    })
    form.pop("password", None)
    form.pop("groups", None)
    form.pop("user_permissions", None)
    saved = admin_client.post(f"/admin/auth/user/{alice.pk}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    alice.refresh_from_db()
    assert alice.account.tier == Tier.PRIORITY
    assert Job.objects.get(pk=waiting.pk).tier == Tier.PRIORITY
    listing = admin_client.get("/admin/auth/user/").content.decode()
    assert "priority" in listing
