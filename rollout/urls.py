"""Management API routes of rollouts."""

from django.urls import path

from . import api

urlpatterns = [
    path("rollouts", api.RolloutListCreateApi.as_view(), name="rollout-list"),
    path("rollouts/<str:rollout_id>", api.RolloutDetailApi.as_view(), name="rollout-detail"),
    path("rollouts/<str:rollout_id>/start", api.RolloutStartApi.as_view(), name="rollout-start"),
    path(
        "rollouts/<str:rollout_id>/advance", api.RolloutAdvanceApi.as_view(), name="rollout-advance"
    ),
    path("rollouts/<str:rollout_id>/pause", api.RolloutPauseApi.as_view(), name="rollout-pause"),
    path("rollouts/<str:rollout_id>/resume", api.RolloutResumeApi.as_view(), name="rollout-resume"),
    path(
        "rollouts/<str:rollout_id>/rollback",
        api.RolloutRollbackApi.as_view(),
        name="rollout-rollback",
    ),
    path(
        "rollouts/<str:rollout_id>/promote", api.RolloutPromoteApi.as_view(), name="rollout-promote"
    ),
    path("rollouts/<str:rollout_id>/share", api.RolloutShareApi.as_view(), name="rollout-share"),
]
