"""Routes of the SDK endpoints."""

from django.urls import path

from . import sdk_api

urlpatterns = [
    path("assignments", sdk_api.sdk_assignments, name="sdk-assignments"),
    path("flows/<str:flow_name>/latest", sdk_api.sdk_flow_latest, name="sdk-flow-latest"),
]
