"""Reference images users upload: validated as real images, size-limited, kept in storage."""

import hashlib
import io

from django.conf import settings
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from . import quotas, storage
from .models import ReferenceImage

FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg"), "WEBP": ("webp", "image/webp")}


class InvalidReference(Exception):
    """A file that cannot be a reference image; `code` says why (too_large, unreadable, format,
    too_many_pixels) and the message says it in words."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def save_reference(user, upload):
    """Check an uploaded file and store it as the user's ReferenceImage."""
    if upload.size > settings.REFERENCE_MAX_BYTES:
        raise InvalidReference(f"The file is {upload.size} bytes; the limit is {settings.REFERENCE_MAX_BYTES}.",
                               "too_large")
    return store_reference(user, upload.read(), getattr(upload, "name", ""))


def reference_from_image(image):
    """The user's ReferenceImage holding a copy of one of their generated images (made once)."""
    data = storage.get_storage().get(image.bucket, image.image_path)
    name = image.prompt[:60] + ("" if image.seed is None else f" (seed {image.seed})")
    return store_reference(image.user, data, name)


def store_reference(user, data, original_name=""):
    """Check image bytes and store them as the user's ReferenceImage; the same bytes give the same row."""
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and corrupt files
        with PILImage.open(io.BytesIO(data)) as image:
            width, height, fmt = image.width, image.height, image.format
    except (UnidentifiedImageError, OSError, SyntaxError, PILImage.DecompressionBombError) as exc:
        raise InvalidReference("This file is not an image we can read; upload a PNG, JPEG or WebP.",
                               "unreadable") from exc
    if fmt not in FORMATS:
        raise InvalidReference(f"{fmt} images are not accepted; use PNG, JPEG or WebP.", "format")
    if width * height > settings.REFERENCE_MAX_PIXELS:
        raise InvalidReference(f"The image is {width}×{height}; at most {settings.REFERENCE_MAX_PIXELS} pixels.",
                               "too_many_pixels")
    extension, mime = FORMATS[fmt]
    name = f"{user.pk}/{hashlib.sha256(data).hexdigest()[:32]}.{extension}"
    existing = ReferenceImage.objects.filter(user=user, path=name).first()
    if existing:  # same bytes uploaded again: one file, one row
        return existing
    quotas.check_reference_upload(user, len(data))
    storage.get_storage().put(ReferenceImage.BUCKET, name, data)
    return ReferenceImage.objects.create(user=user, path=name, content_type=mime, width=width, height=height,
                                         size_bytes=len(data), original_name=original_name[:255])
