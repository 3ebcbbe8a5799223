"""Management API of rollouts (CONTRACT.md): thin views over services and selectors."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.actors import actor_for_request
from controlplane.api import validated
from controlplane.roles import ROLLOUT_ACTION_ROLES
from controlplane.schema import error_response
from registry import selectors as registry_selectors

from . import selectors, services, shares
from .allocation import DEFAULT_STAGES
from .models import RolloutConclusion, RolloutState


class ArmOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    model_id = serializers.UUIDField(source="model_version_id")
    stages = serializers.SerializerMethodField()
    stage_index = serializers.IntegerField()
    share = serializers.SerializerMethodField()
    share_basis_points = serializers.SerializerMethodField()
    segment = serializers.SerializerMethodField()

    def get_stages(self, arm) -> list[float]:
        return [shares.percent(stage) for stage in arm.stages]

    def get_share(self, arm) -> float:
        """Share of devices as a fraction (0.05 = 5 %); 0 once the rollout is rolled back."""
        return shares.fraction(self.get_share_basis_points(arm))

    def get_share_basis_points(self, arm) -> int:
        return arm.share_now

    def get_segment(self, arm) -> list[int]:
        return [arm.segment_start, arm.segment_end]


class EventOutputSerializer(serializers.Serializer):
    action = serializers.CharField()
    actor = serializers.CharField()
    reason = serializers.CharField()
    before = serializers.JSONField()
    after = serializers.JSONField()
    evidence = serializers.JSONField()
    at = serializers.DateTimeField()


class RolloutOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    flow = serializers.UUIDField(source="flow_id")
    flow_name = serializers.CharField(source="flow.name")
    state = serializers.CharField()
    revision = serializers.IntegerField()
    baseline_model_id = serializers.UUIDField(source="baseline_id", allow_null=True)
    arms = ArmOutputSerializer(many=True, source="arms.all")
    auto_advance = serializers.BooleanField()
    stage_min_minutes = serializers.IntegerField()
    min_devices_per_arm = serializers.IntegerField()
    advance_detectable_lift = serializers.FloatField()
    planned_sample = serializers.IntegerField()
    guardrails = serializers.JSONField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    stage_started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    conclusion = serializers.CharField(
        help_text="Once ended: won, lost, inconclusive, stopped_early or invalid; else empty."
    )
    conclusion_note = serializers.CharField()


class RolloutDetailOutputSerializer(RolloutOutputSerializer):
    """What `rollout_body` adds for one rollout (documentation: the body is built there)."""

    exposures = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()),
        help_text="Per arm: devices `exposed`, and how many are still `comparable`.",
    )
    rollback_progress = serializers.DictField(
        allow_null=True, help_text="After a rollback: challenger devices back on the baseline."
    )
    audit_log = EventOutputSerializer(many=True)


def rollout_body(rollout, *, detail: bool = True) -> dict:
    body = RolloutOutputSerializer(rollout).data
    if detail:
        body["exposures"] = selectors.rollout_exposure_counts(rollout=rollout)
        body["rollback_progress"] = selectors.rollout_rollback_progress(rollout=rollout)
        body["audit_log"] = EventOutputSerializer(rollout.events.all(), many=True).data
    return body


class ChallengerInputSerializer(serializers.Serializer):
    model_id = serializers.UUIDField()
    name = serializers.CharField(required=False, max_length=64)
    stages = serializers.ListField(
        child=serializers.DecimalField(max_digits=6, decimal_places=2),
        required=False,
        min_length=1,
        max_length=20,
        help_text=f"Shares in percent, e.g. {list(DEFAULT_STAGES)} (the default).",
    )


class RolloutListCreateApi(APIView):
    write_roles = ROLLOUT_ACTION_ROLES["create"]

    class InputSerializer(serializers.Serializer):
        flow = serializers.UUIDField()
        challengers = ChallengerInputSerializer(many=True)
        auto_advance = serializers.BooleanField(required=False, default=False)
        stage_min_minutes = serializers.IntegerField(required=False, default=60, min_value=0)
        min_devices_per_arm = serializers.IntegerField(required=False, default=100, min_value=1)
        advance_detectable_lift = serializers.FloatField(
            required=False, default=0.5, min_value=0.01, max_value=10
        )
        planned_sample = serializers.IntegerField(required=False, default=5000, min_value=100)
        guardrails = serializers.ListField(required=False, default=list)

    class FilterSerializer(serializers.Serializer):
        flow = serializers.UUIDField(required=False)
        state = serializers.ChoiceField(choices=RolloutState.choices, required=False)

    @extend_schema(parameters=[FilterSerializer], responses=RolloutOutputSerializer(many=True))
    def get(self, request):
        filters = validated(self.FilterSerializer, request.query_params)
        rollouts = selectors.rollout_list(flow_id=filters.get("flow"), state=filters.get("state"))
        return Response([rollout_body(r, detail=False) for r in rollouts])

    @extend_schema(
        request=InputSerializer,
        responses={
            201: RolloutDetailOutputSerializer,
            409: error_response(409, "rollout_active: the flow has an active rollout already."),
        },
    )
    def post(self, request):
        data = validated(self.InputSerializer, request.data)
        flow = registry_selectors.flow_get(flow_id=data.pop("flow"))
        challengers = [dict(c) for c in data.pop("challengers")]
        for challenger in challengers:
            challenger["model_id"] = str(challenger["model_id"])
        rollout = services.rollout_create(
            flow=flow, challengers=challengers, actor=actor_for_request(request), **data
        )
        rollout = selectors.rollout_get(rollout_id=rollout.pk)
        return Response(rollout_body(rollout), status=status.HTTP_201_CREATED)


class RolloutDetailApi(APIView):
    @extend_schema(responses=RolloutDetailOutputSerializer)
    def get(self, request, rollout_id):
        return Response(rollout_body(selectors.rollout_get(rollout_id=rollout_id)))


class TransitionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    revision = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Refuse (409) if it moved on."
    )


class _RolloutTransitionApi(APIView):
    service = None

    # The request is each subclass' own InputSerializer (controlplane.schema.AutoSchema).
    @extend_schema(
        responses={
            200: RolloutDetailOutputSerializer,
            409: error_response(
                409, "The rollout's state does not allow this, or it changed (`revision`)."
            ),
        }
    )
    def post(self, request, rollout_id):
        rollout = selectors.rollout_get(rollout_id=rollout_id)
        data = validated(self.InputSerializer, request.data)
        type(self).service(
            rollout=rollout,
            actor=actor_for_request(request),
            reason=data.pop("reason"),
            expected_revision=data.pop("revision"),
            **data,
        )
        return Response(rollout_body(selectors.rollout_get(rollout_id=rollout_id)))

    InputSerializer = TransitionInputSerializer


class RolloutStartApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["start"]
    service = services.rollout_start


class RolloutAdvanceApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["advance"]
    service = services.rollout_advance


class RolloutPauseApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["pause"]
    service = services.rollout_pause


class RolloutResumeApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["resume"]
    service = services.rollout_resume


class EndingInputSerializer(TransitionInputSerializer):
    conclusion = serializers.ChoiceField(
        choices=RolloutConclusion.choices,
        required=False,
        allow_null=True,
        default=None,
        help_text="What it concluded. Default: `won` for promote; `lost` for the judge's "
        "rollback, `stopped_early` for anyone else's.",
    )
    conclusion_note = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=2000
    )


class RolloutRollbackApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["rollback"]
    service = services.rollout_rollback
    InputSerializer = EndingInputSerializer


class RolloutPromoteApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["promote"]
    service = services.rollout_promote

    class InputSerializer(EndingInputSerializer):
        arm = serializers.CharField(required=False, allow_null=True, default=None, max_length=64)


class RolloutShareApi(_RolloutTransitionApi):
    write_roles = ROLLOUT_ACTION_ROLES["share"]
    service = services.rollout_set_share

    class InputSerializer(TransitionInputSerializer):
        arm = serializers.CharField(max_length=64)
        share = serializers.DecimalField(
            max_digits=5, decimal_places=2, min_value=0, max_value=100, help_text="Percent."
        )

        def validate_share(self, value):
            return int(shares.basis_points_from_percent(value))
