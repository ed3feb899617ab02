"""The API's contract beyond the jobs: list filters (django-filter), error codes, the assets' representation."""

import io
import json

import pytest
from PIL import Image as PILImage

from generation import submission
from generation.models import Image, JobStatus


def make_job(user, job_type, status=JobStatus.QUEUED):
    job = submission.build_job(user, job_type, "a cat")
    job.status = status
    job.save()
    return job


def ids(response):
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_jobs_filter_by_status_job_type_and_queue(alice, alice_api):
    queued = make_job(alice, "image_fast")
    done = make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED)
    assert ids(alice_api.get("/api/jobs/?status=completed")) == {str(done.pk)}
    assert ids(alice_api.get("/api/jobs/?job_type=image_fast")) == {str(queued.pk)}
    assert ids(alice_api.get("/api/jobs/?queue=sdxl_queue")) == {str(done.pk)}
    assert ids(alice_api.get("/api/jobs/?status=queued&queue=sdxl_queue")) == set()
    assert ids(alice_api.get("/api/jobs/")) == {str(queued.pk), str(done.pk)}
    assert ids(alice_api.get("/api/jobs/?status=&queue=")) == {str(queued.pk), str(done.pk)}  # empty: any


@pytest.mark.parametrize("query", ["status=nonsense", "status=queued%00", "job_type=image_fastest",
                                   "queue=gpu_queue"])
def test_a_bad_job_filter_is_a_400_naming_it(alice, alice_api, query):
    make_job(alice, "image_fast")
    response = alice_api.get(f"/api/jobs/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize("query", ["jobs/?status=%00", "jobs/?job_type=%00", "jobs/?queue=%00", "images/?status=%00",
                                   "images/?job_type=%00", "videos/?status=%00", "videos/?job_type=%00"])
def test_a_nul_byte_in_any_list_filter_is_a_400_naming_it(alice_api, query):
    response = alice_api.get(f"/api/{query}")
    assert response.status_code == 400 and query.split("?")[1].split("=")[0] in response.json()


@pytest.mark.parametrize("page", ["", "null", "0", "2"])
def test_a_page_that_is_not_a_page_of_the_list_is_a_404(alice, alice_api, page):
    make_job(alice, "image_fast")
    assert ids(alice_api.get("/api/jobs/?page=1"))
    response = alice_api.get(f"/api/jobs/?page={page}")
    assert response.status_code == 404 and response.json() == {"detail": "Invalid page."}


@pytest.mark.parametrize("path", ["/api/nothing/", "/api/jobs/a.b/", "/api/jobs/a.b/cancel/"])
def test_a_path_the_api_does_not_serve_is_a_json_404(alice_api, path):
    response = alice_api.post(path)
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_a_reference_upload_is_multipart_only(alice_api):
    response = alice_api.post("/api/references/", {"file": "https://example.com/a.png"}, format="json")
    assert response.status_code == 415


def test_the_schema_states_the_errors_and_types_the_server_answers(alice_api):
    schema = json.loads(alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)
    paths, components = schema["paths"], schema["components"]["schemas"]

    def codes(path, method):
        return set(paths[path][method]["responses"])

    assert {"200", "403", "404"} <= codes("/api/jobs/", "get")  # 404: ?page=null
    assert {"201", "200", "400", "402", "403", "409", "415", "429"} <= codes("/api/jobs/", "post")
    assert {"200", "403", "404"} <= codes("/api/jobs/{id}/", "get")
    assert {"200", "403", "404", "409"} <= codes("/api/jobs/{id}/cancel/", "post")
    assert {"204", "403", "404"} <= codes("/api/images/{id}/", "delete")
    assert {"201", "400", "403", "404", "429"} <= codes("/api/images/{id}/reference/", "post")
    assert {"200", "400", "429"} <= codes("/api/auth/token/", "post")
    assert {} in paths["/api/auth/token/"]["post"]["security"]  # no login needed to get a token
    job = components["Job"]["properties"]
    assert job["images"]["type"] == "array" and job["video"]["nullable"] and job["duration"]["nullable"]
    assert job["queue_position"] == {**job["queue_position"], "type": "integer", "nullable": True}
    assert {"$ref": "#/components/schemas/BlankEnum"} in job["reference_type"]["oneOf"]  # "" when there is none
    request = components["JobRequestRequest"]["properties"]
    assert request["prompt"]["minLength"] == 1 and request["reference_image"]["type"] == "integer"
    assert list(paths["/api/jobs/"]["post"]["requestBody"]["content"]) == ["application/json"]
    assert list(paths["/api/references/"]["post"]["requestBody"]["content"]) == ["multipart/form-data"]
    assert components["ReferenceImageRequest"]["properties"]["file"]["format"] == "binary"
    assert components["AuthTokenRequest"]["properties"]["password"]["minLength"] == 1
    assert "workers" not in components["Queue"]["required"] and "workers_online" in components["Queue"]["required"]


def test_images_filter_by_job_type_and_their_jobs_status(alice, alice_api):
    job = make_job(alice, "sdxl_image_fast", JobStatus.COMPLETED)
    image = Image.objects.create(user=alice, job=job, prompt="a cat", bucket="sdxl-image-fast", image_path="a.png",
                                 quality="fast", format="png", width=8, height=8)
    assert ids(alice_api.get("/api/images/?job_type=sdxl_image_fast&status=completed")) == {image.pk}
    assert ids(alice_api.get("/api/images/?job_type=sdxl_image_high")) == set()
    assert alice_api.get(f"/api/images/{image.pk}/").json()["status"] == "completed"
    assert alice_api.get("/api/images/?status=done").status_code == 400
    assert alice_api.get("/api/videos/?job_type=%00").status_code == 400


def test_the_schema_documents_the_filters(alice_api):
    schema = json.loads(alice_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content)

    def parameters(path):
        return {p["name"]: p for p in schema["paths"][path]["get"]["parameters"]}

    jobs = parameters("/api/jobs/")
    assert {"status", "job_type", "queue"} <= set(jobs)
    assert "processing" in jobs["status"]["schema"]["enum"] and "" in jobs["status"]["schema"]["enum"]
    assert {"status", "job_type"} <= set(parameters("/api/images/")) and {"job_type"} <= set(parameters("/api/videos/"))


def test_errors_carry_codes_for_clients_that_ask(alice_api):
    bad = {"job_type": "video_fast", "prompt": "", "num_images": 3, "seed": 2**32}
    plain = alice_api.post("/api/jobs/", bad, format="json")
    assert plain.status_code == 400 and plain.json()["prompt"] == ["This field may not be blank."]
    coded = alice_api.post("/api/jobs/", bad, format="json", headers={"X-Error-Codes": "1"})
    assert coded.status_code == 400
    assert coded.json()["prompt"] == [{"message": "This field may not be blank.", "code": "blank"}]
    assert coded.json()["seed"][0]["code"] == "max_value"
    single = alice_api.post("/api/jobs/", {**bad, "prompt": "a cat", "seed": 1}, format="json",
                            headers={"X-Error-Codes": "1"})
    assert single.json() == {"num_images": [{
        "message": "video_fast makes one video per job; only SDXL types make 3 or 6.", "code": "single_output"}]}


def test_reference_upload_errors_carry_codes(alice_api, settings):
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG")
    settings.REFERENCE_MAX_BYTES = 100
    too_large = alice_api.post("/api/references/", {"file": io.BytesIO(buffer.getvalue())}, format="multipart",
                               headers={"X-Error-Codes": "1"})
    assert too_large.status_code == 400 and too_large.json()["file"][0]["code"] == "too_large"
    settings.REFERENCE_MAX_BYTES = 10**6
    unreadable = alice_api.post("/api/references/", {"file": io.BytesIO(b"not a picture")}, format="multipart",
                                headers={"X-Error-Codes": "1"})
    assert unreadable.json()["file"][0]["code"] == "unreadable"


def test_assets_keep_their_title_and_a_videos_url_says_when_it_expires(alice, alice_api, settings):
    from datetime import datetime, timedelta

    from django.utils import timezone

    from generation.models import Video

    job = make_job(alice, "video_fast", JobStatus.COMPLETED)
    video = Video.objects.create(user=alice, job=job, prompt="a cat " * 30, bucket="video-fast", video_path="v.mp4",
                                 quality="fast", format="mp4", width=8, height=8)
    body = alice_api.get(f"/api/videos/{video.pk}/").json()
    assert body["title"] == ("a cat " * 30)[:80]
    expires = datetime.fromisoformat(body["signed_url_expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (timezone.now() + timedelta(seconds=settings.SIGNED_URL_TTL))) < timedelta(seconds=5)
    assert f"expires={int(expires.timestamp())}" in body["url"] or \
        f"expires={int(expires.timestamp()) - 1}" in body["url"]  # the URL signed in the same second or one before


def test_refusals_carry_codes_too(alice):
    from django.test import Client
    from rest_framework.test import APIClient

    session = Client(enforce_csrf_checks=True)
    session.force_login(alice)
    headers = {"X-Error-Codes": "1"}
    no_token = session.post("/api/jobs/", {"job_type": "image_fast", "prompt": "a cat"}, headers=headers)
    assert no_token.status_code == 403 and no_token.json()["code"] == "permission_denied"
    assert "CSRF" in no_token.json()["detail"]
    anonymous = APIClient().post("/api/jobs/", {}, format="json", headers=headers)
    assert anonymous.status_code in (401, 403) and anonymous.json()["code"] == "not_authenticated"
    assert "code" not in APIClient().post("/api/jobs/", {}, format="json").json()  # only when asked


@pytest.mark.django_db(transaction=True)
def test_with_the_database_down_the_api_answers_a_json_503_and_recovers(alice_api, alice_client):
    from django.db import connection

    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "9"  # nothing listens there: the database is down
    try:
        api = alice_api.get("/api/jobs/")
        page = alice_client.get("/library/")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert api.status_code == 503 and api.json() == {"detail": "The database is unavailable; try again shortly."}
    assert api["Retry-After"] == "10"
    assert page.status_code == 503 and b"Back in a moment" in page.content
    assert alice_api.get("/api/jobs/").status_code == 200  # back: the next request succeeds
