"""Downloads: a finished job's files and parameters in one zip (the plain function and GET /api/jobs/{id}/download/),
the Library's download of one file, and favourites (Asset.keep) as a filter of the Library and the API."""

import io
import re
import zipfile

import pytest
from PIL import Image as PILImage

from generation import downloads, storage, submission
from generation.models import Image, JobStatus, Video
from generation.worker import images, runtime

pytestmark = pytest.mark.django_db

TILE = re.compile(r'<div class="tile[^"]*" data-kind="(image|video)" data-id="(\d+)"')


def finished(user, job_type="sdxl_image_fast", num_images=1, prompt="a lighthouse at dusk"):
    """A job run by the shared runtime into real stored files (PNGs carrying their parameters, or an MP4)."""
    job = submission.build_job(user, job_type, prompt, num_images=num_images)
    job.save()

    def generate(run):
        run.metadata.update(sampler="Euler", model="test-model")
        picture = PILImage.new("RGB", (run.job.width, run.job.height), "teal")
        if run.job.format == "mp4":
            meta = {"fps": 16, "frame_count": 9, "duration": 0.5625, "seed": run.job.seed}
            return [runtime.Output(b"an mp4, as far as this test cares", "mp4", picture, picture.width,
                                   picture.height, metadata=meta)]
        return [runtime.Output(images.encode_png(picture, f"picture {i}"), "png", picture, picture.width,
                               picture.height, index=i, metadata={"seed": run.job.seed + i})
                for i in range(run.job.num_images)]

    runtime.run(job.pk, "sdxl" if job_type.startswith("sdxl") else "wan", generate)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED, job.error_message
    return job


def stored_bytes(asset):
    return storage.get_storage().get(asset.bucket, asset.path)


def test_a_batch_zip_holds_every_image_as_stored_and_their_parameters(alice):
    job = finished(alice, num_images=3, prompt="three foxes in snow")
    archive = zipfile.ZipFile(downloads.write_job_zip(job, io.BytesIO()))
    batch = list(job.images.order_by("image_index"))
    names = [f"ourvidz-sdxl_image_fast-{job.seed + i}-{i + 1}.png" for i in range(3)]
    assert archive.namelist() == [*names, "parameters.txt"]
    for name, image in zip(names, batch, strict=True):
        assert archive.read(name) == stored_bytes(image)
    text = archive.read("parameters.txt").decode()
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 3
    for name, block in zip(names, blocks, strict=True):
        file_line, prompt, negative, params = block.split("\n")
        seed = job.seed + names.index(name)
        assert (file_line, prompt) == (name, "three foxes in snow")
        assert negative == f"Negative prompt: {job.negative_prompt}"
        assert params.startswith(f"Steps: {job.steps}, Sampler: Euler, CFG scale: {job.guidance}, Seed: {seed}, "
                                 f"Size: {job.width}x{job.height}, Model: test-model")
        assert params.endswith("Job type: sdxl_image_fast")


def test_a_video_zip_holds_the_video_and_its_frames(alice):
    job = finished(alice, "video_fast", prompt="waves on a rock")
    archive = zipfile.ZipFile(downloads.write_job_zip(job, io.BytesIO()))
    name = f"ourvidz-video_fast-{job.seed}.mp4"
    assert archive.namelist() == [name, "parameters.txt"]
    assert archive.read(name) == stored_bytes(job.video)
    text = archive.read("parameters.txt").decode()
    assert text.startswith(f"{name}\nwaves on a rock\n") and "Frames: 9, FPS: 16" in text


def test_an_unfinished_job_has_nothing_to_zip(alice):
    job = submission.build_job(alice, "sdxl_image_fast", "not yet")
    job.save()
    target = io.BytesIO()
    with pytest.raises(downloads.NotFinished):
        downloads.write_job_zip(job, target)
    assert target.getvalue() == b""


def test_the_api_zip_is_for_its_owner_and_for_completed_jobs(alice, alice_api, bob_api):
    job = finished(alice, num_images=3)
    response = alice_api.get(f"/api/jobs/{job.pk}/download/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="ourvidz-sdxl_image_fast-{job.seed}.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert len(archive.namelist()) == 4
    assert bob_api.get(f"/api/jobs/{job.pk}/download/").json() == {"detail": "No Job matches the given query."}
    assert bob_api.get(f"/api/jobs/{job.pk}/download/").status_code == 404
    waiting = submission.build_job(alice, "sdxl_image_fast", "still waiting")
    waiting.save()
    refused = alice_api.get(f"/api/jobs/{waiting.pk}/download/")
    assert refused.status_code == 409 and "queued" in refused.json()["detail"]


def test_the_library_downloads_one_file_under_its_name(alice, alice_client, bob_client):
    job = finished(alice, num_images=3)
    second = job.images.get(image_index=1)
    response = alice_client.get(f"/library/image/{second.pk}/download/")
    assert response.status_code == 302
    served = alice_client.get(response["Location"])
    assert served["Content-Disposition"] == f'attachment; filename="ourvidz-sdxl_image_fast-{job.seed + 1}-2.png"'
    assert b"".join(served.streaming_content) == stored_bytes(second)
    assert bob_client.get(f"/library/image/{second.pk}/download/").status_code == 404


def test_favourites_are_a_filter_of_the_library_and_the_api(alice, alice_client, alice_api):
    batch = finished(alice, num_images=3)
    movie = finished(alice, "video_fast")
    starred = batch.images.get(image_index=2)
    Image.objects.filter(pk=starred.pk).update(keep=True)
    Video.objects.filter(pk=movie.video.pk).update(keep=True)

    def tiles(**params):
        return {(kind, int(pk)) for kind, pk in TILE.findall(alice_client.get("/library/", params).content.decode())}

    assert len(tiles()) == 4
    assert tiles(favourites="1") == {("image", starred.pk), ("video", movie.video.pk)}
    assert tiles(favourites="1", kind="image") == {("image", starred.pk)}
    html = alice_client.get("/library/").content.decode()
    assert html.count('aria-pressed="true"') == 2 and html.count('aria-pressed="false"') == 2

    assert [i["id"] for i in alice_api.get("/api/images/", {"keep": "true"}).json()["results"]] == [starred.pk]
    assert len(alice_api.get("/api/images/", {"keep": "false"}).json()["results"]) == 2
    assert len(alice_api.get("/api/images/", {"keep": ""}).json()["results"]) == 3
    assert [v["id"] for v in alice_api.get("/api/videos/", {"keep": "true"}).json()["results"]] == [movie.video.pk]
    refused = alice_api.get("/api/images/", {"keep": "yes"})
    assert refused.status_code == 400 and "keep" in refused.json()
