"""Serves model files from storage when no CDN fronts them (the embedded default)."""

from django.http import FileResponse, Http404, HttpResponseNotModified
from django.views.decorators.http import require_safe

from .storage import IMMUTABLE, STORAGE_KEY_PATTERN, model_file_exists, model_file_open


@require_safe
def model_file_download(request, sha256: str, file_name: str):
    """Return the exact stored bytes; the key carries their sha256, so they are cacheable forever."""
    key = f"models/{sha256}/{file_name}"
    if not STORAGE_KEY_PATTERN.fullmatch(key) or not model_file_exists(key):
        raise Http404("No such model file.")
    etag = f'"{sha256}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponseNotModified()
    else:
        response = FileResponse(
            model_file_open(key),
            as_attachment=True,
            filename=file_name,
            content_type="application/octet-stream",
        )
    response["ETag"] = etag
    response["Cache-Control"] = IMMUTABLE
    return response
