"""Object storage for generated files: a local folder (default) or MinIO/S3, bucket per job type.

Both backends hand out URLs that expire. Object names are deterministic, so storing a file twice
(a re-run task) overwrites rather than duplicates.
"""

import io
import mimetypes
import time
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare

_signer = signing.Signer(salt="ourvidz.media")


def image_name(user_id, job_id, index):
    return f"{user_id}/{job_id}_{index}.png"


def video_name(user_id, job_id):
    return f"{user_id}/{job_id}.mp4"


def thumbnail_name(name):
    """Thumbnails sit beside their file: `1/abc_0.png` -> `1/abc_0.thumb.webp`."""
    return name.rsplit(".", 1)[0] + ".thumb.webp"


def content_type(name):
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class LocalStorage:
    """Files under MEDIA_ROOT/<bucket>/<name>, served by Django behind signed, expiring URLs."""

    def __init__(self, root):
        self.root = Path(root)

    def file_path(self, bucket, name):
        path = (self.root / bucket / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object name escapes the storage root: {bucket}/{name}")
        return path

    def put(self, bucket, name, data):
        path = self.file_path(bucket, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)  # readers never see half a file

    def get(self, bucket, name):
        return self.file_path(bucket, name).read_bytes()

    def open(self, bucket, name):
        """The stored file as a binary stream to read in chunks (a context manager)."""
        return self.file_path(bucket, name).open("rb")

    def delete(self, bucket, name):
        self.file_path(bucket, name).unlink(missing_ok=True)

    def exists(self, bucket, name):
        return self.file_path(bucket, name).is_file()

    def url(self, bucket, name, ttl, download=None):
        """A signed URL valid for `ttl` seconds; with `download`, the browser saves it under that name."""
        expires = int(time.time()) + ttl
        signature = _signer.signature(f"{bucket}/{name}:{expires}")
        path = reverse("media", kwargs={"bucket": bucket, "name": name})
        extra = f"&download={quote(download)}" if download else ""
        return f"{path}?expires={expires}&signature={signature}{extra}"

    def verify(self, bucket, name, expires, signature):
        """True when a URL's signature is ours and it has not expired."""
        try:
            expires = int(expires)
        except (TypeError, ValueError):
            return False
        expected = _signer.signature(f"{bucket}/{name}:{expires}")
        return expires >= time.time() and constant_time_compare(expected, signature or "")

    def check(self):
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / ".healthz"
        probe.write_bytes(b"ok")
        probe.unlink()


class MinioStorage:
    """MinIO or any S3 server through the `minio` client, with presigned GET URLs."""

    def __init__(self, endpoint, access_key, secret_key, secure, region, prefix="", public_endpoint="",
                 public_secure=None):
        from minio import Minio

        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region)
        # Presigning is local arithmetic; a public endpoint gives browsers a host they can reach, over https or
        # not whatever the internal endpoint uses (`public_secure`; None: as `secure`).
        self.url_client = (Minio(public_endpoint, access_key=access_key, secret_key=secret_key,
                                 secure=secure if public_secure is None else public_secure, region=region)
                           if public_endpoint else self.client)
        self.prefix = prefix
        self._buckets = set()

    def _bucket(self, bucket):
        return f"{self.prefix}{bucket}"

    def _ensure_bucket(self, bucket):
        if bucket not in self._buckets:
            if not self.client.bucket_exists(bucket):
                from minio.error import S3Error

                try:
                    self.client.make_bucket(bucket)
                except S3Error as err:  # another worker made it first
                    if err.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._buckets.add(bucket)

    def put(self, bucket, name, data):
        bucket = self._bucket(bucket)
        self._ensure_bucket(bucket)
        self.client.put_object(bucket, name, io.BytesIO(data), len(data), content_type=content_type(name))

    def get(self, bucket, name):
        response = self.client.get_object(self._bucket(bucket), name)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @contextmanager
    def open(self, bucket, name):
        """The stored object as a binary stream to read in chunks (a context manager)."""
        response = self.client.get_object(self._bucket(bucket), name)
        try:
            yield response
        finally:
            response.close()
            response.release_conn()

    def delete(self, bucket, name):
        self.client.remove_object(self._bucket(bucket), name)

    def exists(self, bucket, name):
        from minio.error import S3Error

        try:
            self.client.stat_object(self._bucket(bucket), name)
            return True
        except S3Error as err:
            if err.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return False
            raise

    def url(self, bucket, name, ttl, download=None):
        """A presigned GET URL; with `download`, S3 answers as an attachment with that name."""
        headers = {"response-content-disposition": f'attachment; filename="{download}"'} if download else None
        return self.url_client.presigned_get_object(self._bucket(bucket), name, expires=timedelta(seconds=ttl),
                                                    response_headers=headers)

    def check(self):
        self.client.list_buckets()


def signed_url(bucket, name, request=None, download=None):
    """A URL for one stored file that expires after SIGNED_URL_TTL, absolute when `request` is given."""
    url = get_storage().url(bucket, name, settings.SIGNED_URL_TTL, download=download)
    return request.build_absolute_uri(url) if request is not None and url.startswith("/") else url


def get_storage():
    """The configured backend (one per process)."""
    return _storage(settings.STORAGE_BACKEND)


def new_storage():
    """A backend of its own rather than the process's shared one: a worker's main process checks storage with it, and
    the pool processes it forks must not inherit its connections."""
    return _storage.__wrapped__(settings.STORAGE_BACKEND)


@lru_cache(maxsize=2)
def _storage(backend):
    if backend == "local":
        return LocalStorage(settings.MEDIA_ROOT)
    if backend == "minio":
        return MinioStorage(settings.MINIO_ENDPOINT, settings.MINIO_ACCESS_KEY, settings.MINIO_SECRET_KEY,
                            settings.MINIO_SECURE, settings.MINIO_REGION, settings.MINIO_BUCKET_PREFIX,
                            settings.MINIO_PUBLIC_ENDPOINT, settings.MINIO_PUBLIC_SECURE)
    raise ValueError(f"STORAGE_BACKEND must be 'local' or 'minio', not {backend!r}")
