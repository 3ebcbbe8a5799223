"""Routes of the SDK endpoints of experiments (mounted under `api/v1/sdk/`)."""

from django.urls import path

from . import sdk_api

urlpatterns = [
    path("events", sdk_api.sdk_events, name="sdk-events"),
]
