"""The jobs API without workers: validation, scoping, idempotency, cancel, job types, health."""

import base64
import io
import json
import subprocess
import sys

import pytest
from helpers import ALICE_PASSWORD, ROOT
from PIL import Image as PILImage
from rest_framework.test import APIClient

from generation import job_types, submission
from generation.models import Image, Job, JobStatus, ReferenceImage


def post_job(api, capture, headers=None, **data):
    """POST a job, running what waits for the commit (the scheduler); returns (response, the ids of the
    jobs the scheduler released to a pool's queue meanwhile)."""
    before = set(Job.objects.filter(released_at__isnull=False).values_list("pk", flat=True))
    with capture(execute=True):
        response = api.post("/api/jobs/", data, format="json", headers=headers or {})
    released = Job.objects.filter(released_at__isnull=False).exclude(pk__in=before)
    return response, [str(pk) for pk in released.values_list("pk", flat=True)]


def png_bytes(size=(40, 30), color=(200, 10, 10)):
    buffer = io.BytesIO()
    PILImage.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_token_auth(alice):
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "alice", "password": ALICE_PASSWORD})
    assert response.status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token " + response.json()["token"])
    assert client.get("/api/jobs/").status_code == 200
    assert APIClient().get("/api/jobs/").status_code in (401, 403)


def test_submit_sdxl_job(alice_api, sandbox, django_capture_on_commit_callbacks):
    sandbox.worker("sdxl")
    response, sent = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast",
                              prompt="two women on a beach", num_images=3, negative_prompt="blurry")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["queue"] == "sdxl_queue"
    assert 0 <= body["seed"] <= 2**32 - 1
    assert body["queue_position"] == 1 and body["waiting_reason"] is None
    assert body["estimated_finish_seconds"] == body["estimated_start_seconds"] + body["expected_generation_seconds"]
    assert body["expected_generation_seconds"] == 3 * job_types.get("sdxl_image_fast").expected_seconds
    assert "bad anatomy" in body["negative_prompt"] and "wrong number of people" in body["negative_prompt"]
    assert body["negative_prompt"].endswith("blurry")
    assert sent == [body["id"]]  # released to the pool once committed
    job = Job.objects.get(pk=body["id"])
    assert (job.width, job.height, job.steps) == (64, 64, 3)  # dev profile, from the table


def test_wan_job_carries_no_generated_negative(alice_api, django_capture_on_commit_callbacks):
    response, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="two cats",
                           negative_prompt="static")
    assert response.status_code == 201
    assert response.json()["negative_prompt"] == "static"
    assert response.json()["frames"] == 9 and response.json()["queue"] == "wan_queue"


def test_seed_zero_is_kept_and_absent_seeds_differ(alice_api, django_capture_on_commit_callbacks):
    zero, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="image_fast", prompt="x", seed=0)
    assert zero.json()["seed"] == 0
    seeds = {post_job(alice_api, django_capture_on_commit_callbacks, job_type="image_fast",
                      prompt="x")[0].json()["seed"] for _ in range(20)}
    assert len(seeds) == 20  # drawn from a secure source, not the clock


def test_aspect_ratio_picks_the_pool_size(alice_api, django_capture_on_commit_callbacks, settings):
    settings.OURVIDZ_PROFILE = "production"
    sdxl, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_high", prompt="x",
                       aspect_ratio="16:9")
    wan, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_high", prompt="x",
                      aspect_ratio="1:1")
    default, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="x")
    assert (sdxl.json()["width"], sdxl.json()["height"], sdxl.json()["steps"]) == (1344, 768, 25)
    assert (wan.json()["width"], wan.json()["height"], wan.json()["frames"]) == (624, 624, 81)
    assert (default.json()["width"], default.json()["height"]) == (480, 832)


BAD_INPUTS = [
    ({"prompt": "x"}, "job_type"),
    ({"job_type": "nope", "prompt": "x"}, "job_type"),
    ({"job_type": "sdxl_image_fast"}, "prompt"),
    ({"job_type": "sdxl_image_fast", "prompt": "   "}, "prompt"),
    ({"job_type": "sdxl_image_fast", "prompt": "x" * 2001}, "prompt"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "num_images": 2}, "num_images"),
    ({"job_type": "video_fast", "prompt": "x", "num_images": 3}, "num_images"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "seed": -1}, "seed"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "seed": 2**32}, "seed"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "seed": "abc"}, "seed"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "reference_type": "style"}, "reference_image"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "reference_image": 999999,
      "reference_type": "composition"}, "reference_image"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "reference_strength": 0.05}, "reference_strength"),
    ({"job_type": "sdxl_image_fast", "prompt": "x", "reference_strength": 1.5}, "reference_strength"),
]


@pytest.mark.parametrize(("data", "field"), BAD_INPUTS)
def test_bad_input_is_400_naming_the_field_and_creates_nothing(alice_api, sandbox, django_capture_on_commit_callbacks,
                                                               data, field):
    sandbox.worker("sdxl")
    sandbox.worker("wan")
    response, sent = post_job(alice_api, django_capture_on_commit_callbacks, **data)
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert Job.objects.count() == 0
    assert sent == []  # nothing released


def test_several_bad_fields_are_all_named(alice_api, django_capture_on_commit_callbacks):
    response, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="",
                           seed=-5, num_images=4)
    assert response.status_code == 400
    assert {"prompt", "seed"} <= set(response.json())


def test_reference_image_rules(alice_api, alice, bob, settings, django_capture_on_commit_callbacks):
    ref = ReferenceImage.objects.create(user=alice, path="1/a.png", content_type="image/png", width=8,
                                        height=8, size_bytes=10)
    theirs = ReferenceImage.objects.create(user=bob, path="2/b.png", content_type="image/png", width=8,
                                           height=8, size_bytes=10)
    ok, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="x",
                     reference_image=ref.pk, reference_type="composition")
    assert ok.status_code == 201 and ok.json()["reference_strength"] == 0.7
    for data, field in [
        ({"reference_image": theirs.pk, "reference_type": "composition"}, "reference_image"),
        ({"reference_image": ref.pk}, "reference_type"),
    ]:
        response, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast",
                               prompt="x", **data)
        assert response.status_code == 400 and field in response.json()
    image, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="image_fast", prompt="x",
                        reference_image=ref.pk, reference_type="composition")
    assert image.status_code == 400 and "only video types" in image.json()["reference_type"][0]
    settings.WAN_I2V_MODEL_PATH = ""  # no WAN worker online: this server's configuration answers
    wan, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="x",
                      reference_image=ref.pk, reference_type="composition")
    assert wan.status_code == 400 and "no image-to-video model" in wan.json()["reference_type"][0]
    assert Job.objects.count() == 1


def test_ip_adapter_reference_types_follow_what_the_pool_advertises(alice_api, alice, sandbox,
                                                                     django_capture_on_commit_callbacks):
    ref = ReferenceImage.objects.create(user=alice, path="1/a.png", content_type="image/png", width=8,
                                        height=8, size_bytes=10)
    sandbox.worker("sdxl", reference_types=["character", "composition", "style"])
    style, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="x",
                        reference_image=ref.pk, reference_type="style", reference_strength=0.5)
    assert style.status_code == 201 and style.json()["reference_strength"] == 0.5
    # A second worker without IP-Adapter weights: a style job could land on it, so it is refused now.
    sandbox.worker("sdxl", reference_types=["composition"])
    refused, sent = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="x",
                             reference_image=ref.pk, reference_type="character")
    assert refused.status_code == 400 and sent == []
    assert "needs IP-Adapter weights" in refused.json()["reference_type"][0]
    composition, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="x",
                              reference_image=ref.pk, reference_type="composition")
    assert composition.status_code == 201


def test_wan_video_references_follow_what_the_pool_advertises(alice_api, alice, sandbox,
                                                               django_capture_on_commit_callbacks):
    ref = ReferenceImage.objects.create(user=alice, path="1/a.png", content_type="image/png", width=8,
                                        height=8, size_bytes=10)

    def post(job_type, reference_type="composition"):
        return post_job(alice_api, django_capture_on_commit_callbacks, job_type=job_type, prompt="x",
                        reference_image=ref.pk, reference_type=reference_type)

    sandbox.worker("wan", reference_types=["composition"])  # image-to-video loaded
    video, sent = post("video7b_fast_enhanced")
    assert video.status_code == 201 and len(sent) == 1
    style, _ = post("video_fast", "style")
    assert style.status_code == 400 and "use 'composition'" in style.json()["reference_type"][0]
    image, _ = post("image_fast")
    assert image.status_code == 400 and "only video types" in image.json()["reference_type"][0]
    # A second WAN worker without an image-to-video model: a video job could land on it.
    sandbox.worker("wan", reference_types=[])
    refused, sent = post("video_fast")
    assert refused.status_code == 400 and sent == []
    assert refused.json()["reference_type"] == [
        "video_fast does not take a reference image: no image-to-video model is configured."]
    assert Job.objects.count() == 1


def test_configured_reference_types(settings):
    from generation import capabilities

    settings.SDXL_IP_ADAPTER_PATH = "/models/sdxl-ip-adapter"
    settings.WAN_I2V_MODEL_PATH = "/models/wan-i2v"
    assert capabilities.configured_reference_types("sdxl") == {"composition", "style", "character"}
    settings.SDXL_IP_ADAPTER_PATH = ""
    assert capabilities.configured_reference_types("sdxl") == {"composition"}
    assert capabilities.configured_reference_types("wan") == {"composition"}  # an I2V model
    settings.WAN_I2V_MODEL_PATH = ""
    assert capabilities.configured_reference_types("wan") == set()


def test_idempotency_key_returns_the_first_job(alice_api, bob_api, sandbox, django_capture_on_commit_callbacks):
    sandbox.worker("wan")
    headers = {"Idempotency-Key": "retry-123"}
    first, sent_first = post_job(alice_api, django_capture_on_commit_callbacks, headers, job_type="image_fast",
                                 prompt="a")
    again, sent_again = post_job(alice_api, django_capture_on_commit_callbacks, headers, job_type="image_fast",
                                 prompt="a")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(sent_first) == 1 and sent_again == []
    # Keys are per user.
    theirs, _ = post_job(bob_api, django_capture_on_commit_callbacks, headers, job_type="image_fast", prompt="a")
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]


def test_a_retry_gets_its_first_job_even_when_its_request_would_no_longer_validate(
        alice_api, alice, django_capture_on_commit_callbacks):
    ref = ReferenceImage.objects.create(user=alice, path="1/a.png", content_type="image/png", width=8, height=8,
                                        size_bytes=10)
    request = {"job_type": "sdxl_image_fast", "prompt": "a", "reference_image": ref.pk,
               "reference_type": "composition"}
    headers = {"Idempotency-Key": "sent-before-the-delete"}
    first, _ = post_job(alice_api, django_capture_on_commit_callbacks, headers, **request)
    ref.delete()  # the answer was lost; meanwhile the reference went
    again, sent = post_job(alice_api, django_capture_on_commit_callbacks, headers, **request)
    assert first.status_code == 201 and again.status_code == 200, again.content
    assert again.json()["id"] == first.json()["id"] and sent == []


def test_a_reused_idempotency_key_with_another_body_is_a_409(alice_api, django_capture_on_commit_callbacks):
    headers = {"Idempotency-Key": "one-job"}
    first, _ = post_job(alice_api, django_capture_on_commit_callbacks, headers, job_type="sdxl_image_fast",
                        prompt="a cat", num_images=3)
    other, sent = post_job(alice_api, django_capture_on_commit_callbacks, headers, job_type="sdxl_image_fast",
                           prompt="a cat", num_images=-48465)
    assert other.status_code == 409, other.content
    assert other.json()["code"] == "idempotency_key_reused" and "Idempotency-Key" in other.json()["detail"]
    assert Job.objects.count() == 1 and sent == []
    # The same body, its keys in another order, still gets the first job.
    again, _ = post_job(alice_api, django_capture_on_commit_callbacks, headers, num_images=3, prompt="a cat",
                        job_type="sdxl_image_fast")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_a_racing_request_with_the_same_key_and_another_body_is_refused_too(alice):
    request = {"job_type": "image_fast", "prompt": "a cat"}
    first, created = submission.submit(alice, request, "raced", submission.fingerprint(request))
    assert created
    # The other request looked before the first was recorded: the unique key stops its insert.
    with pytest.raises(submission.KeyReused):
        submission.submit(alice, {**request, "prompt": "a dog"}, "raced", submission.fingerprint({"prompt": "a dog"}))
    assert submission.submit(alice, request, "raced", submission.fingerprint(request)) == (first, False)
    assert Job.objects.count() == 1


def test_a_job_from_before_request_digests_is_returned_for_its_key_whatever_the_body(
        alice, alice_api, django_capture_on_commit_callbacks):
    old = submission.build_job(alice, "image_fast", "a cat")
    old.idempotency_key = "from-before"
    old.save()
    again, _ = post_job(alice_api, django_capture_on_commit_callbacks, {"Idempotency-Key": "from-before"},
                        job_type="image_fast", prompt="a dog")
    assert again.status_code == 200 and again.json()["id"] == str(old.pk)


@pytest.mark.parametrize("key", ["k" * 256, "nul\x00"])
def test_an_idempotency_key_too_long_or_with_a_nul_is_a_400_naming_the_header(
        alice_api, django_capture_on_commit_callbacks, key):
    response, _ = post_job(alice_api, django_capture_on_commit_callbacks, {"Idempotency-Key": key},
                           job_type="image_fast", prompt="a cat")
    assert response.status_code == 400 and "Idempotency-Key" in response.json(), response.content
    assert Job.objects.count() == 0
    longest, _ = post_job(alice_api, django_capture_on_commit_callbacks, {"Idempotency-Key": "k" * 255},
                          job_type="image_fast", prompt="a cat")
    assert longest.status_code == 201


def test_other_users_get_404(alice_api, alice, bob_api, django_capture_on_commit_callbacks):
    response, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="sdxl_image_fast", prompt="x")
    job = Job.objects.get(pk=response.json()["id"])
    image = Image.objects.create(user=alice, job=job, prompt="x", bucket="sdxl-image-fast", image_path="a.png",
                                 quality="fast", format="png", width=8, height=8)
    assert bob_api.get(f"/api/jobs/{job.pk}/").status_code == 404
    assert bob_api.post(f"/api/jobs/{job.pk}/cancel/").status_code == 404
    assert bob_api.get(f"/api/images/{image.pk}/").status_code == 404
    assert bob_api.delete(f"/api/images/{image.pk}/").status_code == 404
    assert bob_api.get("/api/jobs/").json()["count"] == 0
    assert bob_api.get("/api/images/").json()["count"] == 0
    assert Image.objects.filter(pk=image.pk).exists()
    assert alice_api.get(f"/api/jobs/{job.pk}/").status_code == 200


def test_cancel_queued_job(alice_api, django_capture_on_commit_callbacks):
    response, _ = post_job(alice_api, django_capture_on_commit_callbacks, job_type="image_fast", prompt="x")
    job_id = response.json()["id"]
    cancelled = alice_api.post(f"/api/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert alice_api.post(f"/api/jobs/{job_id}/cancel/").status_code == 409
    # Status only moves forward.
    assert not Job.move(job_id, JobStatus.PROCESSING)
    assert not Job.move(job_id, JobStatus.QUEUED)


def test_queue_position_counts_jobs_ahead(alice_api, sandbox, django_capture_on_commit_callbacks):
    sandbox.worker("wan")  # two released (one per worker, plus a buffer of one), the third waits
    jobs = [post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="x")[0].json()
            for _ in range(3)]
    assert [job["queue_position"] for job in jobs] == [1, 2, 3]
    assert [alice_api.get(f"/api/jobs/{job['id']}/").json()["queue_position"] for job in jobs] == [1, 2, 3]


def test_with_no_worker_online_a_job_waits_and_says_why(alice_api, sandbox, django_capture_on_commit_callbacks):
    response, sent = post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="x")
    body = response.json()
    assert response.status_code == 201 and body["status"] == "queued" and sent == []
    assert body["waiting_reason"] == "No WAN worker is online; the job starts when one is."
    assert body["queue_position"] is None and body["estimated_start_seconds"] is None
    sandbox.worker("wan")
    again = alice_api.get(f"/api/jobs/{body['id']}/").json()
    assert again["waiting_reason"] is None and again["queue_position"] == 1


def test_queues_endpoint_shows_what_waits_in_each_pool(alice_api, bob, admin_client, sandbox,
                                                       django_capture_on_commit_callbacks):
    sandbox.worker("wan")  # two of alice's videos are released (one per worker, plus a buffer of one)
    for _ in range(3):
        post_job(alice_api, django_capture_on_commit_callbacks, job_type="video_fast", prompt="x")
    running = submission.build_job(bob, "image_fast", "a WAN image that runs")
    running.status = JobStatus.PROCESSING
    running.save()
    assert all("heaviest_users" not in q for q in alice_api.get("/api/queues/").json())  # other users' names
    body = {q["queue"]: q for q in admin_client.get("/api/queues/").json()}  # staff see them
    wan = body["wan_queue"]
    assert {"length", "queued_jobs", "processing_jobs", "workers", "average_wait_seconds", "jobs_per_hour",
            "error_rate"} <= set(wan)  # the keys of before stay
    assert (wan["waiting_jobs"], wan["released_jobs"], wan["running_jobs"]) == (1, 2, 1)
    assert (wan["queued_jobs"], wan["processing_jobs"]) == (3, 1)
    assert wan["heaviest_users"] == [{"user": "alice", "waiting": 1, "in_flight": 2},
                                     {"user": "bob", "waiting": 0, "in_flight": 1}]
    assert 0 <= wan["oldest_waiting_seconds"] < 60
    sdxl = body["sdxl_queue"]
    assert (sdxl["waiting_jobs"], sdxl["heaviest_users"], sdxl["oldest_waiting_seconds"]) == (0, [], None)


def test_ordinary_users_see_how_many_workers_are_online_and_staff_see_which(alice_api, admin_client, sandbox):
    sandbox.worker("wan", name="wan-1@gpu-host-7", reference_types={"composition"})
    sandbox.worker("wan", name="wan-2@gpu-host-8")  # still loading its models
    answer = alice_api.get("/api/queues/")
    wan = {q["queue"]: q for q in answer.json()}["wan_queue"]
    assert (wan["workers_online"], wan["workers_ready"]) == (2, 1)
    assert "workers" not in wan and "gpu-host" not in answer.content.decode()  # no hosts, pids or model paths
    staff = {q["queue"]: q for q in admin_client.get("/api/queues/").json()}["wan_queue"]
    assert [w["name"] for w in staff["workers"]] == ["wan-1@gpu-host-7", "wan-2@gpu-host-8"]
    assert all(w["pid"] for w in staff["workers"])


def test_job_types_endpoint(alice_api):
    rows = alice_api.get("/api/job-types/").json()
    assert [r["name"] for r in rows] == list(job_types.JOB_TYPES)
    sdxl = next(r for r in rows if r["name"] == "sdxl_image_high")
    assert sdxl["steps"] == 25 and sdxl["num_images"] == [1, 3, 6] and sdxl["bucket"] == "sdxl-image-high"
    video = next(r for r in rows if r["name"] == "video7b_high_enhanced")
    assert video["frames"] == 81 and video["enhanced"] and video["queue"] == "wan_queue"
    assert (sdxl["label"], video["label"]) == ("SDXL image · high", "WAN video · high · enhanced")


@pytest.mark.parametrize(("body", "field"), [
    ({"prompt": ["a"]}, "prompt"),
    ({"negative_prompt": {"a": 1}}, "negative_prompt"),
    ({"job_type": ["x"]}, "job_type"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "a\x00"}, "prompt"),
    (["a"], "non_field_errors"),
])
def test_a_negative_prompt_preview_of_the_wrong_type_is_a_400_naming_the_field(alice_api, body, field):
    response = alice_api.post("/api/negative-prompt/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content


def test_a_negative_prompt_preview_by_query(alice_api):
    wan = alice_api.get("/api/negative-prompt/", {"job_type": "video_fast", "negative_prompt": "static"})
    assert wan.status_code == 200 and wan.json() == {"negative_prompt": "static", "multi_party": [], "dropped": []}
    assert "bad anatomy" in alice_api.get("/api/negative-prompt/").json()["negative_prompt"]  # SDXL by default
    assert "job_type" in alice_api.get("/api/negative-prompt/?job_type=").json()  # empty is no job type


def test_reference_upload_validates_images(alice_api):
    ok = alice_api.post("/api/references/", {"file": io.BytesIO(png_bytes())}, format="multipart")
    assert ok.status_code == 201, ok.content
    assert (ok.json()["width"], ok.json()["height"]) == (40, 30)
    assert alice_api.get(ok.json()["url"]).status_code == 200
    not_image = alice_api.post("/api/references/", {"file": io.BytesIO(b"not an image at all")}, format="multipart")
    assert not_image.status_code == 400 and "file" in not_image.json()
    truncated = alice_api.post("/api/references/", {"file": io.BytesIO(png_bytes()[:60])}, format="multipart")
    assert truncated.status_code == 400 and "file" in truncated.json()


def test_reference_upload_size_limit(alice_api, settings):
    settings.REFERENCE_MAX_BYTES = 100
    response = alice_api.post("/api/references/", {"file": io.BytesIO(png_bytes((200, 200)))}, format="multipart")
    assert response.status_code == 400 and "limit" in response.json()["file"][0]
    assert ReferenceImage.objects.count() == 0


@pytest.mark.django_db
def test_healthz_reports_each_dependency(client, settings, tmp_path):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok", "database": "ok", "broker": "ok", "storage": "ok",
                                            "tokenizer": "ok", "pools": {"sdxl": "ok", "wan": "ok"}}


def test_openapi_schema_lists_the_endpoints(alice_api):
    response = alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    for path in ["/api/jobs/", "/api/jobs/{id}/cancel/", "/api/images/", "/api/videos/", "/api/references/",
                 "/api/job-types/", "/api/queues/"]:
        assert path in paths, path


def test_web_process_never_imports_torch():
    code = (
        "import sys, django; django.setup(); "
        "from django.urls import get_resolver; get_resolver().url_patterns; import ourvidz.wsgi; "
        "from generation import submission, admin, receivers, tasks; from generation.api import views; "
        "from generation.web import workspace, library, dashboard, live; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_browsable_api_offers_and_accepts_the_submission_form(alice, django_capture_on_commit_callbacks):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    page = browser.get("/api/jobs/", HTTP_ACCEPT="text/html")
    html = page.content.decode()
    assert page.status_code == 200 and '<select class="form-control" name="job_type">' in html
    assert 'name="prompt"' in html and 'name="seed"' in html
    csrf = page.cookies["csrftoken"].value
    refused = browser.post("/api/jobs/", {"job_type": "image_fast", "prompt": "no token"},
                           HTTP_ACCEPT="application/json")
    assert refused.status_code == 403  # CSRF protects session-authenticated posts
    with django_capture_on_commit_callbacks(execute=True) as sent:
        response = browser.post("/api/jobs/", {"job_type": "image_fast", "prompt": "from the form",
                                               "csrfmiddlewaretoken": csrf}, HTTP_ACCEPT="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["prompt"] == "from the form" and len(sent) == 2  # the release and the pages' event


def test_job_events_stream_the_users_jobs_as_they_change(alice_client, alice, bob, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    from generation import events, submission
    from generation.web import live

    monkeypatch.setattr(live, "EVENT_STREAM_SECONDS", 3)
    mine = submission.build_job(alice, "image_fast", "mine")
    mine.save()
    theirs = submission.build_job(bob, "image_fast", "theirs")
    theirs.save()
    response = alice_client.get("/events/jobs")
    assert response["Content-Type"] == "text/event-stream"
    chunks = iter(response.streaming_content)
    assert next(chunks) == b"retry: 1000\n\n"
    first = next(chunks).decode()  # the active jobs, as the API shows them
    assert first.startswith("event: job\ndata: ") and json.loads(first.split("data: ", 1)[1])["id"] == str(mine.pk)
    with django_capture_on_commit_callbacks(execute=True):
        events.publish_on_commit(theirs)  # another user's change is not on this stream
        submission.cancel(mine)  # publishes once committed
    change = json.loads(next(chunks).decode().split("data: ", 1)[1])
    assert change["id"] == str(mine.pk) and change["status"] == "cancelled"
    # Previews go to their owner's pages only, as they are: a picture and the step it shows.
    events.publish_preview(theirs, b"their picture", 1, 4)
    events.publish_preview(mine, b"my picture", 2, 4)
    event, data = next(chunks).decode().split("\ndata: ", 1)
    preview = json.loads(data)
    assert event == "event: preview"
    assert (preview["id"], preview["step"], preview["total_steps"]) == (str(mine.pk), 2, 4)
    assert preview["image"] == "data:image/webp;base64," + base64.b64encode(b"my picture").decode()
    finish(response)  # the stream ends: its slot is given back
    assert alice_client.get("/events/jobs").status_code == 200
    alice_client.logout()
    assert alice_client.get("/events/jobs").status_code == 302  # login required


def finish(response):
    """Read a stream to its end, as a browser does until the server ends it (the test client then closes the
    response, as the server does)."""
    for _ in response.streaming_content:
        pass


def test_live_streams_are_capped_per_user_and_per_process_and_the_page_polls_instead(alice_client, bob_client,
                                                                                     settings, monkeypatch):
    import threading

    from generation.web import live

    settings.EVENT_STREAMS_PER_USER = 2
    monkeypatch.setattr(live, "EVENT_STREAM_SECONDS", 1)
    monkeypatch.setattr(live, "_process_slots", threading.BoundedSemaphore(3))  # this process: three at most
    held = [alice_client.get("/events/jobs") for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    refused = alice_client.get("/events/jobs")
    assert refused.status_code == 429 and refused["Retry-After"] == "30"
    assert refused.json()["detail"] == ("You have 2 live streams open already (other tabs or windows); this page "
                                        "polls instead.")
    finish(held.pop())  # a stream ended (the page opens the next one)
    held.append(alice_client.get("/events/jobs"))
    assert held[-1].status_code == 200
    bob_stream = bob_client.get("/events/jobs")
    assert bob_stream.status_code == 200
    assert bob_client.get("/events/jobs").status_code == 429  # the process is full, whoever asks
    for response in [*held, bob_stream]:
        finish(response)
