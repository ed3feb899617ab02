"""Locally stored files (STORAGE_BACKEND=local), served behind signed URLs that expire."""

from django.http import FileResponse, Http404
from django.utils.text import get_valid_filename
from django.views.decorators.http import require_GET

from .. import storage


@require_GET
def media(request, bucket, name):
    """Serve a locally stored file behind a signed URL that has not expired."""
    backend = storage.get_storage()
    if not isinstance(backend, storage.LocalStorage) or not backend.verify(
            bucket, name, request.GET.get("expires"), request.GET.get("signature")):
        raise Http404
    try:
        path = backend.file_path(bucket, name)
    except ValueError as exc:
        raise Http404 from exc
    if not path.is_file():
        raise Http404
    # ?download=<file name> saves the file under that name instead of showing it.
    download = get_valid_filename(request.GET.get("download", "")) if request.GET.get("download") else ""
    return FileResponse(path.open("rb"), content_type=storage.content_type(name), as_attachment=bool(download),
                        filename=download or None)
