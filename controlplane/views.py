"""Error pages: JSON for the API, Django's HTML pages elsewhere; the admin's lockout page."""

from axes.helpers import get_client_username, get_cool_off
from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from .exceptions import (
    error_body,
    json_bad_request,
    json_forbidden,
    json_not_found,
    json_server_error,
)


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    """Malformed requests (bad Host, Content-Length, multipart, too much data...)."""
    if _is_api(request):
        return json_bad_request(request, exception)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return json_forbidden(request, exception)
    return defaults.permission_denied(request, exception)


def not_found(request, exception=None):
    if _is_api(request):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return json_server_error(request)
    return defaults.server_error(request)


# Any method may reach an unknown API path: a POST without a CSRF token must still get the 404.
@csrf_exempt
def api_not_found(request):
    return json_not_found(request)


def login_locked_out(request, original_response=None, credentials=None):
    """What django-axes answers a locked-out login attempt (AXES_LOCKOUT_CALLABLE): a 429.

    Every attempt while locked out, right password or not, starts the cool-off again, so the
    wait is always the whole cool-off from now.
    """
    seconds = max(1, round(get_cool_off(request).total_seconds()))
    wait = _duration_text(seconds)
    if _is_api(request):
        detail = f"Too many failed logins: try again in {wait}."
        response = JsonResponse(error_body("rate_limited", detail), status=429)
    else:
        context = {
            **admin.site.each_context(request),
            "title": "Too many failed logins",
            "wait": wait,
            "username": get_client_username(request, credentials) or "",
        }
        response = render(request, "axes/lockout.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response


def _duration_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
