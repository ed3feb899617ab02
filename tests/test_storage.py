"""Both storage backends: the local folder and MinIO (against moto's S3 server on loopback)."""

import urllib.request

import pytest

from generation import storage


@pytest.fixture
def minio(s3_endpoint):
    return storage.MinioStorage(s3_endpoint, "testing", "testing-secret", secure=False, region="us-east-1",
                                prefix="ourvidz-")


def test_object_names_are_deterministic():
    assert storage.image_name(7, "abc", 2) == "7/abc_2.png"
    assert storage.video_name(7, "abc") == "7/abc.mp4"
    assert storage.thumbnail_name("7/abc_2.png") == "7/abc_2.thumb.webp"


def test_minio_put_get_presign_delete(minio):
    minio.put("sdxl-image-fast", "1/job_0.png", b"\x89PNG fake")
    assert minio.exists("sdxl-image-fast", "1/job_0.png")
    assert minio.get("sdxl-image-fast", "1/job_0.png") == b"\x89PNG fake"
    assert "ourvidz-sdxl-image-fast" in [b.name for b in minio.client.list_buckets()]
    stat = minio.client.stat_object("ourvidz-sdxl-image-fast", "1/job_0.png")
    assert stat.content_type == "image/png"
    url = minio.url("sdxl-image-fast", "1/job_0.png", ttl=60)
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url) as response:
        assert response.read() == b"\x89PNG fake"
    minio.put("sdxl-image-fast", "1/job_0.png", b"second")  # re-run overwrites, no duplicate
    assert [o.object_name for o in minio.client.list_objects("ourvidz-sdxl-image-fast", recursive=True)] == [
        "1/job_0.png"]
    minio.delete("sdxl-image-fast", "1/job_0.png")
    assert not minio.exists("sdxl-image-fast", "1/job_0.png")
    minio.check()


def test_both_backends_open_a_stored_file_as_a_stream(minio, tmp_path):
    data = bytes(range(256)) * 8192  # 2 MiB: read in parts, as the job zip copies a file
    for backend in (minio, storage.LocalStorage(tmp_path)):
        backend.put("video-fast", "1/job.mp4", data)
        with backend.open("video-fast", "1/job.mp4") as stream:
            assert stream.read(1000) == data[:1000]
            assert stream.read() == data[1000:]


def test_minio_public_endpoint_signs_for_the_browser_host(s3_endpoint):
    backend = storage.MinioStorage(s3_endpoint, "testing", "testing-secret", secure=False, region="us-east-1",
                                   public_endpoint="media.example.com")
    assert backend.url("a-bucket", "x.png", 60).startswith("http://media.example.com/a-bucket/x.png?")


def test_minio_public_endpoint_may_use_https_in_front_of_plain_http(s3_endpoint):
    backend = storage.MinioStorage(s3_endpoint, "testing", "testing-secret", secure=False, region="us-east-1",
                                   public_endpoint="media.example.com", public_secure=True)
    assert backend.url("a-bucket", "x.png", 60).startswith("https://media.example.com/a-bucket/x.png?")
    assert not backend.client._base_url.is_https  # the workers still reach MinIO over plain http


def test_local_signed_urls(client, tmp_path, settings):
    backend = storage.LocalStorage(tmp_path)
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path
    storage._storage.cache_clear()
    try:
        backend.put("image-fast", "3/j_0.png", b"pixels")
        url = backend.url("image-fast", "3/j_0.png", ttl=60)
        response = client.get(url)
        assert response.status_code == 200 and b"".join(response.streaming_content) == b"pixels"
        assert response["Content-Type"] == "image/png"
        assert client.get(url.replace("signature=", "signature=x")).status_code == 404
        assert client.get(url.split("?")[0]).status_code == 404
        expired = backend.url("image-fast", "3/j_0.png", ttl=-1)
        assert client.get(expired).status_code == 404
        other = backend.url("image-fast", "3/other.png", ttl=60)  # signature is per object
        assert client.get(other.replace("other.png", "j_0.png")).status_code == 404
    finally:
        storage._storage.cache_clear()


def test_local_storage_refuses_paths_outside_its_root(tmp_path):
    backend = storage.LocalStorage(tmp_path / "media")
    with pytest.raises(ValueError):
        backend.put("bucket", "../../escape.txt", b"x")


@pytest.mark.django_db(transaction=True)
def test_a_worker_stores_its_files_in_minio(s3_endpoint, tmp_path, settings, tiny_models, alice):
    """A real SDXL worker configured for MinIO writes the PNG and thumbnail there."""
    from celery import current_app
    from helpers import Stack, worker_env

    from generation import submission
    from generation.models import Image, Installation

    Installation.objects.all().delete()  # an installation of its own (its own broker): its worker records MinIO
    minio_env = {"STORAGE_BACKEND": "minio", "MINIO_ENDPOINT": s3_endpoint, "MINIO_ACCESS_KEY": "testing",
                 "MINIO_SECRET_KEY": "testing-secret", "MINIO_BUCKET_PREFIX": "e2e-"}
    # Its own Redis database, so the session's local-storage workers do not take this job.
    broker = worker_env()["REDIS_URL"].rsplit("/", 1)[0] + "/2"
    stack = Stack(["sdxl"], worker_env(REDIS_URL=broker, **minio_env), tmp_path / "worker.log")
    try:
        job = submission.build_job(alice, "sdxl_image_fast", "a harbour", num_images=3, seed=1)
        job.save()
        with current_app.connection_for_write(broker) as connection:
            current_app.send_task(job.type.task, args=[str(job.pk)], queue=job.queue, connection=connection)
        done = stack.wait_for_job(job.pk)
    finally:
        stack.stop()
    assert done.status == "completed", done.error_message
    backend = storage.MinioStorage(s3_endpoint, "testing", "testing-secret", secure=False, region="us-east-1",
                                   prefix="e2e-")
    names = sorted(o.object_name for o in backend.client.list_objects("e2e-sdxl-image-fast", recursive=True))
    assert names == sorted([f"{alice.pk}/{job.pk}_{i}{ext}" for i in range(3) for ext in (".png", ".thumb.webp")])
    image = Image.objects.get(job=job, image_index=2)
    with urllib.request.urlopen(backend.url(image.bucket, image.image_path, 60)) as response:
        assert response.read().startswith(b"\x89PNG")


def test_download_urls_save_under_the_given_name(client, tmp_path, settings, s3_endpoint):
    settings.STORAGE_BACKEND = "local"
    settings.MEDIA_ROOT = tmp_path
    storage._storage.cache_clear()
    try:
        backend = storage.get_storage()
        backend.put("image-fast", "3/j_0.png", b"pixels")
        response = client.get(backend.url("image-fast", "3/j_0.png", 60, download="ourvidz-image_fast-7.png"))
        assert response.status_code == 200
        assert response["Content-Disposition"] == 'attachment; filename="ourvidz-image_fast-7.png"'
        inline = client.get(backend.url("image-fast", "3/j_0.png", 60))
        assert not inline["Content-Disposition"].startswith("attachment")
    finally:
        storage._storage.cache_clear()
    minio = storage.MinioStorage(s3_endpoint, "testing", "testing-secret", secure=False, region="us-east-1")
    minio.put("video-fast", "1/job.mp4", b"movie")
    with urllib.request.urlopen(minio.url("video-fast", "1/job.mp4", 60, download="clip.mp4")) as response:
        assert response.read() == b"movie"
        assert response.headers["Content-Disposition"] == 'attachment; filename="clip.mp4"'
