"""Error pages: JSON for the API, HTML elsewhere (403 in the admin's look); the admin's home and lockout pages."""

from axes.helpers import get_client_username, get_cool_off
from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from .exceptions import (
    error_body,
    json_bad_request,
    json_forbidden,
    json_not_found,
    json_server_error,
)
from .roles import LAND_ON_OVERVIEW, user_roles


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    """Malformed requests (bad Host, Content-Length, multipart, too much data...)."""
    if _is_api(request):
        return json_bad_request(request, exception)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    """JSON for the API; elsewhere (the admin) a page in the admin's look that says why."""
    if _is_api(request):
        return json_forbidden(request, exception)
    back = request.META.get("HTTP_REFERER", "")
    if not back or not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("admin:index")
    detail = str(exception or "")
    context = {
        **admin.site.each_context(request),
        "title": "Not allowed",
        "detail": detail if detail and detail != "Permission denied" else "",
        "roles": sorted(role.label for role in user_roles(request.user)),
        "back_url": back,
    }
    return render(request, "403.html", context, status=403)


def admin_index(request, extra_context=None):
    """The admin's home page: product managers and viewers land on the flows overview."""
    roles = user_roles(request.user)
    if roles and roles <= LAND_ON_OVERVIEW:
        return redirect("admin:registry_flow_changelist")
    return admin.site.index(request, extra_context)


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
