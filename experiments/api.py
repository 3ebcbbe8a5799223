"""Management API of experiments: run the judge on a rollout now, read its latest analysis."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.errors import NotFound
from controlplane.roles import ROLLOUT_ACTION_ROLES
from controlplane.schema import error_response
from rollout.selectors import rollout_get

from . import decisions
from .selectors import analysis_latest
from .services import rollout_analyze


# The analysis body is built by `analysis._body` and stored as it is; these document it
# (CONTRACT.md, "Analysis body"). Fields past the contract's are optional: older stored
# analyses may lack them.
class AnalysisArmOutputSerializer(serializers.Serializer):
    arm = serializers.CharField(help_text="`baseline` or a challenger's name.")
    model_id = serializers.UUIDField(allow_null=True)
    share = serializers.FloatField()
    exposed = serializers.IntegerField()
    reporting = serializers.IntegerField(required=False)
    adoption = serializers.FloatField(required=False, allow_null=True)
    metrics = serializers.DictField(
        child=serializers.DictField(),
        help_text="By metric: `n`, `mean`, and for a challenger the comparison with the "
        "baseline (`diff`, `lift`, their intervals, `p_value`, `sequential_ci`, `significant`), "
        "or `error` when the metric could not be computed.",
    )


class AnalysisOutputSerializer(serializers.Serializer):
    rollout_id = serializers.UUIDField(required=False)
    computed_at = serializers.DateTimeField()
    watermark = serializers.DateTimeField(required=False)
    rollout_state = serializers.CharField(required=False)
    srm_p_value = serializers.FloatField(allow_null=True)
    srm = serializers.ListField(child=serializers.DictField(), required=False)
    decision = serializers.ChoiceField(
        choices=[
            decisions.CONTINUE,
            decisions.ADVANCE,
            decisions.ROLLBACK,
            decisions.PROMOTE_RECOMMENDED,
            decisions.SRM_ALERT,
            decisions.INSUFFICIENT_DATA,
        ]
    )
    reasons = serializers.ListField(child=serializers.CharField(), required=False)
    arms = AnalysisArmOutputSerializer(many=True)
    power = serializers.DictField(required=False)
    thresholds = serializers.DictField(required=False)
    metric_failures = serializers.DictField(child=serializers.CharField(), required=False)
    notes = serializers.ListField(child=serializers.CharField(), required=False)
    action = serializers.CharField(required=False, help_text="What the judge did on this look.")


class RolloutAnalyzeApi(APIView):
    # Running the judge now does only what the periodic job does every 5 minutes, under the
    # rollout's own settings (auto_advance included), so any editor may (docs/api.md).
    write_roles = ROLLOUT_ACTION_ROLES["analyze"]

    @extend_schema(
        request=None,
        responses={
            200: AnalysisOutputSerializer,
            503: error_response(503, "analysis_timeout: not finished in time; try again later."),
        },
    )
    def post(self, request, rollout_id):
        """Run the judge now: the same analysis and automatic actions as the periodic job.

        On the ledger as the background jobs left it (the body's `watermark` says how far it
        is complete), never waiting for them, and within ANALYZE_REQUEST_TIMEOUT_SECONDS.
        """
        analysis = rollout_analyze(
            rollout=rollout_get(rollout_id=rollout_id),
            act=True,
            catch_up=False,
            within=settings.ANALYZE_REQUEST_TIMEOUT_SECONDS,
        )
        return Response(analysis.body)


class RolloutAnalysisApi(APIView):
    @extend_schema(responses=AnalysisOutputSerializer)
    def get(self, request, rollout_id):
        analysis = analysis_latest(rollout=rollout_get(rollout_id=rollout_id))
        if analysis is None:
            raise NotFound(
                "This rollout has not been analysed yet; POST …/analyze runs the judge now.",
                code="no_analysis",
            )
        return Response(analysis.body)
