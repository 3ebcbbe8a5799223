"""Management API of experiments: run the judge on a rollout now, read its latest analysis."""

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.errors import NotFound
from controlplane.roles import ROLLOUT_ACTION_ROLES
from rollout.selectors import rollout_get

from .selectors import analysis_latest
from .services import rollout_analyze


class RolloutAnalyzeApi(APIView):
    # Running the judge now does only what the periodic job does every 5 minutes, under the
    # rollout's own settings (auto_advance included), so any editor may (docs/api.md).
    write_roles = ROLLOUT_ACTION_ROLES["analyze"]

    @extend_schema(request=None, responses={200: dict, 503: dict})
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
    @extend_schema(responses={200: dict})
    def get(self, request, rollout_id):
        analysis = analysis_latest(rollout=rollout_get(rollout_id=rollout_id))
        if analysis is None:
            raise NotFound(
                "This rollout has not been analysed yet; POST …/analyze runs the judge now.",
                code="no_analysis",
            )
        return Response(analysis.body)
