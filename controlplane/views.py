"""Error pages: JSON for the API, Django's HTML pages elsewhere."""

from django.views import defaults

from .exceptions import json_not_found, json_server_error


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return defaults.server_error(request)


def api_not_found(request):
    return json_not_found(request)
