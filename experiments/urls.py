"""Management API routes of experiments."""

from django.urls import path

from . import api

urlpatterns = [
    path(
        "rollouts/<str:rollout_id>/analyze", api.RolloutAnalyzeApi.as_view(), name="rollout-analyze"
    ),
    path(
        "rollouts/<str:rollout_id>/analysis",
        api.RolloutAnalysisApi.as_view(),
        name="rollout-analysis",
    ),
]
