"""Encoding of generated pictures: PNG with its parameters, and WebP thumbnails."""

import io

from PIL import Image, PngImagePlugin

from ..metadata import parameters_text  # noqa: F401 (the pools format their PNGs' parameters with it)

THUMBNAIL_SIZE = 256


def encode_png(image, parameters=""):
    """PNG bytes of a PIL image, carrying `parameters` in a tEXt chunk."""
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def encode_thumbnail(image):
    """WebP bytes of `image` shrunk to fit THUMBNAIL_SIZE (never enlarged)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="WEBP", quality=80)
    return buffer.getvalue()
