"""End to end through the API with real Celery worker processes of both pools (tiny models)."""

import io
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image as PILImage

from generation import job_types
from generation.models import Image, Job, ReferenceImage, Video


class Jobs:
    """Submit jobs through the API as one user and wait for the live workers to finish them."""

    def __init__(self, api, workers):
        self.api = api
        self.workers = workers

    def submit(self, **data):
        response = self.api.post("/api/jobs/", data, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    def wait(self, job_id):
        return self.workers.wait_for_job(job_id)

    def finish(self, **data):
        """Submit, wait for completion, and return the job as the API shows it."""
        done = self.wait(self.submit(**data)["id"])
        assert done.status == "completed", (done.status, done.error_message)
        return self.api.get(f"/api/jobs/{done.pk}/").json()

    def fetch(self, url):
        response = self.api.get(url)
        assert response.status_code == 200, url
        return b"".join(response.streaming_content)

    def pixels(self, url):
        return np.asarray(PILImage.open(io.BytesIO(self.fetch(url))).convert("RGB"))


@pytest.fixture
def jobs(alice_api, live_workers):
    """alice's jobs, run by the live workers."""
    return Jobs(alice_api, live_workers)


@pytest.mark.parametrize("job_type", list(job_types.JOB_TYPES))
def test_every_job_type_completes_with_its_assets(jobs, job_type):
    jt = job_types.get(job_type)
    num_images = 3 if jt.batched else 1
    job = jobs.finish(job_type=job_type, prompt="a red fox in the snow", num_images=num_images)
    assert job["progress"] == 1.0 and job["started_at"] and job["completed_at"]
    assert job["metadata"]["timings"]["generate"] > 0
    if jt.kind == "image":
        assert job["video"] is None and len(job["images"]) == num_images
        for image in job["images"]:
            picture = PILImage.open(io.BytesIO(jobs.fetch(image["url"])))
            assert picture.format == "PNG" and picture.size == (job["width"], job["height"])
            assert "parameters" in picture.info
            thumb = PILImage.open(io.BytesIO(jobs.fetch(image["thumbnail_url"])))
            assert thumb.format == "WEBP"
    else:
        assert job["images"] == [] and job["video"]
        video = job["video"]
        data = jobs.fetch(video["url"])
        with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
            f.write(data)
            f.flush()
            frames = _decode(f.name)
        assert frames.shape[0] == job["frames"] == video["frame_count"]
        assert frames.shape[1:3] == (job["height"], job["width"])
        assert video["fps"] == job_types.VIDEO_FPS
        assert PILImage.open(io.BytesIO(jobs.fetch(video["thumbnail_url"]))).format == "WEBP"
    if jt.enhanced:
        enhancement = job["metadata"]["enhancement"]
        assert enhancement["original"] == "a red fox in the snow"
        assert job["enhanced_prompt"] == enhancement["enhanced"] or enhancement["error"]
    assert f"/{jt.bucket}/" in (job["images"][0]["url"] if jt.kind == "image" else job["video"]["url"])


def _decode(path):
    """Decode every frame with ffmpeg (the binary from imageio-ffmpeg)."""
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


def test_same_seed_same_pixels_and_batches_differ(jobs):
    first = jobs.finish(job_type="sdxl_image_fast", prompt="a lighthouse", num_images=3, seed=42)
    second = jobs.finish(job_type="sdxl_image_fast", prompt="a lighthouse", num_images=3, seed=42)
    a = [jobs.pixels(image["url"]) for image in first["images"]]
    b = [jobs.pixels(image["url"]) for image in second["images"]]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert [image["seed"] for image in first["images"]] == [42, 43, 44]
    wan_a = jobs.finish(job_type="image_fast", prompt="a lighthouse", seed=0)
    wan_b = jobs.finish(job_type="image_fast", prompt="a lighthouse", seed=0)
    assert np.array_equal(jobs.pixels(wan_a["images"][0]["url"]), jobs.pixels(wan_b["images"][0]["url"]))


def test_queued_job_cancelled_never_runs_and_queue_is_fifo(jobs):
    # Several jobs at once on one single-slot worker: they start in submission order.
    submitted = [jobs.submit(job_type="sdxl_image_fast", prompt=f"job {i}", num_images=6) for i in range(4)]
    cancelled = submitted[2]
    assert jobs.api.post(f"/api/jobs/{cancelled['id']}/cancel/").json()["status"] == "cancelled"
    for job in submitted:
        jobs.wait(job["id"])
    rows = {str(j.pk): j for j in Job.objects.filter(pk__in=[j["id"] for j in submitted])}
    assert rows[cancelled["id"]].status == "cancelled" and rows[cancelled["id"]].started_at is None
    assert not Image.objects.filter(job_id=cancelled["id"]).exists()
    ran = [rows[j["id"]] for j in submitted if j is not cancelled]
    assert all(j.status == "completed" for j in ran)
    assert [j.started_at for j in ran] == sorted(j.started_at for j in ran)


def test_worker_failure_ends_failed_with_a_readable_error(jobs, alice):
    missing = ReferenceImage.objects.create(user=alice, path=f"{alice.pk}/gone.png", content_type="image/png",
                                            width=8, height=8, size_bytes=1)
    job = jobs.submit(job_type="sdxl_image_fast", prompt="x", reference_image=missing.pk,
                      reference_type="composition")
    done = jobs.wait(job["id"])
    assert done.status == "failed"
    assert "gone.png" in done.error_message and done.completed_at
    assert jobs.api.get(f"/api/jobs/{job['id']}/").json()["error_message"] == done.error_message


def test_composition_reference_is_used(jobs):
    buffer = io.BytesIO()
    PILImage.new("RGB", (100, 60), (255, 0, 0)).save(buffer, format="PNG")
    buffer.seek(0)
    ref = jobs.api.post("/api/references/", {"file": buffer}, format="multipart").json()
    plain = jobs.finish(job_type="sdxl_image_fast", prompt="x", seed=5)
    guided = jobs.finish(job_type="sdxl_image_fast", prompt="x", seed=5, reference_image=ref["id"],
                         reference_type="composition", reference_strength=0.3)
    assert guided["metadata"]["reference"]["type"] == "composition"
    assert guided["metadata"]["pipeline"] == "img2img"
    assert not np.array_equal(jobs.pixels(plain["images"][0]["url"]), jobs.pixels(guided["images"][0]["url"]))


@pytest.mark.parametrize("reference_type", ["style", "character"])
def test_ip_adapter_reference_through_the_api(jobs, reference_type):
    buffer = io.BytesIO()
    PILImage.new("RGB", (100, 60), (0, 0, 255)).save(buffer, format="PNG")
    buffer.seek(0)
    ref = jobs.api.post("/api/references/", {"file": buffer}, format="multipart").json()
    plain = jobs.finish(job_type="sdxl_image_fast", prompt="x", seed=9)
    guided = jobs.finish(job_type="sdxl_image_fast", prompt="x", seed=9, reference_image=ref["id"],
                         reference_type=reference_type, reference_strength=0.9)
    assert guided["metadata"]["reference"]["type"] == reference_type
    assert "ip_adapter" in guided["metadata"]["reference"]
    assert not np.array_equal(jobs.pixels(plain["images"][0]["url"]), jobs.pixels(guided["images"][0]["url"]))


def test_video_from_a_reference_through_the_api(jobs):
    from generation import presence

    buffer = io.BytesIO()
    PILImage.new("RGB", (100, 60), (255, 0, 0)).save(buffer, format="PNG")
    buffer.seek(0)
    ref = jobs.api.post("/api/references/", {"file": buffer}, format="multipart").json()
    # Submission decides from what the live WAN worker advertises: it loaded the image-to-video model.
    (wan,) = [w for w in presence.online() if "wan_queue" in w["queues"]]
    assert wan["loaded"]["reference_types"] == ["composition"] and wan["loaded"]["i2v"] == "wan-i2v-tiny"
    plain = jobs.finish(job_type="video_fast", prompt="x", seed=5)
    guided = jobs.finish(job_type="video_fast", prompt="x", seed=5, reference_image=ref["id"],
                         reference_type="composition")
    assert guided["metadata"]["pipeline"] == "i2v" and guided["metadata"]["reference"]["size"] == [32, 48]
    assert jobs.fetch(plain["video"]["url"]) != jobs.fetch(guided["video"]["url"])
    refused = jobs.api.post("/api/jobs/", {"job_type": "image_fast", "prompt": "x", "reference_image": ref["id"],
                                           "reference_type": "composition"}, format="json")
    assert refused.status_code == 400 and "only video types" in refused.json()["reference_type"][0]


def test_deleting_an_asset_removes_its_files(jobs, settings):
    job = jobs.finish(job_type="video_fast", prompt="waves")
    video = Video.objects.get(job_id=job["id"])
    files = [Path(settings.MEDIA_ROOT) / video.bucket / video.video_path,
             Path(settings.MEDIA_ROOT) / video.bucket / video.thumbnail_path]
    assert all(f.is_file() for f in files)
    response = jobs.api.delete(f"/api/videos/{video.pk}/")
    assert response.status_code == 204
    assert not any(f.exists() for f in files)
    assert jobs.api.get(job["video"]["url"]).status_code == 404


def test_queues_endpoint_shows_workers_and_figures(jobs, admin_client):
    jobs.finish(job_type="image_fast", prompt="x")
    stats = {q["queue"]: q for q in jobs.api.get("/api/queues/").json()}
    assert set(stats) == {"sdxl_queue", "wan_queue"}
    for queue in stats.values():
        assert queue["workers_ready"] == queue["workers_online"] >= 1, queue
        assert queue["length"] == 0 and queue["error_rate"] == 0.0
    wan = stats["wan_queue"]
    assert wan["jobs_per_hour"] >= 1 and wan["average_wait_seconds"] is not None
    staff = {q["queue"]: q for q in admin_client.get("/api/queues/").json()}  # the workers themselves: staff only
    assert staff["wan_queue"]["workers"][0]["name"].startswith("wan@")
