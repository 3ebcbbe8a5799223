"""The project's URLs plus `bench/bare`: the framework's floor for a JSON answer.

The bare route comes first, so it pays the least URL resolution: the comparison with the poll
is as strict as it can be.
"""

from django.http import JsonResponse
from django.urls import path

from controlplane.urls import handler404, handler500
from controlplane.urls import urlpatterns as project_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


def bare_view(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/bare", bare_view, name="bench-bare"), *project_urlpatterns]
