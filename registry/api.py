"""Management API of the registry: thin views over services and selectors (CONTRACT.md)."""

import json

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.actors import actor_for_request
from controlplane.api import validated
from controlplane.roles import ADMINS, BASELINE_SETTERS, MODEL_AUTHORS
from controlplane.schema import error_response

from . import selectors, services
from .storage import model_file_url


def _base_url(request) -> str:
    return request.build_absolute_uri("/")


class AppOutputSerializer(serializers.Serializer):
    app_id = serializers.UUIDField(source="pk")
    name = serializers.CharField()
    bundle_identifiers = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class AppListCreateApi(APIView):
    write_roles = ADMINS

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        bundle_identifiers = serializers.ListField(
            child=serializers.CharField(max_length=255), required=False, default=list
        )

    @extend_schema(responses=AppOutputSerializer(many=True))
    def get(self, request):
        return Response(AppOutputSerializer(selectors.app_list(), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: AppOutputSerializer,
            409: error_response(409, "already_exists: an app of this name exists already."),
        },
    )
    def post(self, request):
        data = validated(self.InputSerializer, request.data)
        app = services.app_create(**data)
        return Response(AppOutputSerializer(app).data, status=status.HTTP_201_CREATED)


class AppSdkKeyCreateApi(APIView):
    write_roles = ADMINS

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False, default="")

    class OutputSerializer(serializers.Serializer):
        key = serializers.CharField()
        prefix = serializers.CharField()
        name = serializers.CharField()
        app_id = serializers.UUIDField()
        created_at = serializers.DateTimeField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request, app_id):
        app = selectors.app_get(app_id=app_id)
        data = validated(self.InputSerializer, request.data)
        key, plaintext = services.sdk_key_create(app=app, name=data["name"])
        body = {
            "key": plaintext,
            "prefix": key.prefix,
            "name": key.name,
            "app_id": app.pk,
            "created_at": key.created_at,
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class BundledModelOutputSerializer(serializers.Serializer):
    """One baseline of the manifest, named as the per-customer SDK build reads them."""

    flowId = serializers.IntegerField()
    flowName = serializers.CharField()
    modelVersion = serializers.UUIDField()
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    format = serializers.CharField()
    fileName = serializers.CharField()
    url = serializers.CharField()


class BundleManifestOutputSerializer(serializers.Serializer):
    app_id = serializers.UUIDField()
    bundle_identifiers = serializers.ListField(child=serializers.CharField())
    customModels = BundledModelOutputSerializer(many=True)


class AppBundleManifestApi(APIView):
    @extend_schema(responses=BundleManifestOutputSerializer)
    def get(self, request, app_id):
        app = selectors.app_get(app_id=app_id)
        return Response(selectors.bundle_manifest(app=app, base_url=_base_url(request)))


class FlowOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="pk")
    app_id = serializers.UUIDField()
    name = serializers.CharField()
    flow_id = serializers.IntegerField()
    positive_label = serializers.CharField()
    interface = serializers.JSONField()
    signals = serializers.JSONField()
    attribution_window_hours = serializers.IntegerField()
    baseline_model_id = serializers.UUIDField(source="baseline_id", allow_null=True)
    created_at = serializers.DateTimeField()


class AppFlowListCreateApi(APIView):
    write_roles = MODEL_AUTHORS

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=64)
        flow_id = serializers.IntegerField(min_value=1, max_value=2_147_483_647)
        positive_label = serializers.CharField(
            max_length=200, required=False, allow_blank=True, default=""
        )
        interface = serializers.JSONField(required=False, allow_null=True, default=None)
        signals = serializers.JSONField(required=False, allow_null=True, default=None)
        attribution_window_hours = serializers.IntegerField(
            required=False, default=72, min_value=1, max_value=24 * 90
        )

    @extend_schema(responses=FlowOutputSerializer(many=True))
    def get(self, request, app_id):
        app = selectors.app_get(app_id=app_id)
        return Response(FlowOutputSerializer(selectors.flow_list(app=app), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: FlowOutputSerializer,
            409: error_response(409, "already_exists: the app has a flow of this name or id."),
        },
    )
    def post(self, request, app_id):
        app = selectors.app_get(app_id=app_id)
        data = validated(self.InputSerializer, request.data)
        flow = services.flow_create(app=app, **data)
        return Response(FlowOutputSerializer(flow).data, status=status.HTTP_201_CREATED)


class FlowDetailApi(APIView):
    @extend_schema(responses=FlowOutputSerializer)
    def get(self, request, flow_id):
        return Response(FlowOutputSerializer(selectors.flow_get(flow_id=flow_id)).data)


class ModelVersionOutputSerializer(serializers.Serializer):
    model_id = serializers.UUIDField(source="pk")
    flow = serializers.UUIDField(source="flow_id")
    sha256 = serializers.CharField()
    size = serializers.IntegerField()
    format = serializers.CharField()
    spec_version = serializers.IntegerField()
    model_type = serializers.CharField()
    inputs = serializers.SerializerMethodField()
    outputs = serializers.SerializerMethodField()
    class_labels = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()
    metadata = serializers.SerializerMethodField()
    min_sdk_version = serializers.CharField()
    max_sdk_version = serializers.SerializerMethodField()
    metrics = serializers.JSONField()
    notes = serializers.CharField()
    url = serializers.SerializerMethodField()
    uploaded_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_inputs(self, obj) -> list:
        return obj.description.get("inputs", [])

    def get_outputs(self, obj) -> list:
        return obj.description.get("outputs", [])

    def get_class_labels(self, obj) -> list:
        return obj.description.get("class_labels", [])

    def get_warnings(self, obj) -> list:
        return obj.description.get("warnings", [])

    def get_metadata(self, obj) -> dict:
        return obj.description.get("metadata", {})

    def get_max_sdk_version(self, obj) -> str | None:
        return obj.max_sdk_version or None

    def get_url(self, obj) -> str:
        return model_file_url(obj.storage_key, base_url=self.context.get("base_url", ""))

    def get_uploaded_by(self, obj) -> str | None:
        return obj.uploaded_by.get_username() if obj.uploaded_by else None


class JsonObjectField(serializers.JSONField):
    """A JSON object sent either as JSON or, in a multipart form, as a JSON string."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError):
                raise serializers.ValidationError("Not valid JSON.") from None
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return data


class FlowModelListUploadApi(APIView):
    write_roles = MODEL_AUTHORS
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        file = serializers.FileField(allow_empty_file=True)
        min_sdk_version = serializers.CharField(max_length=32, required=False, allow_blank=True)
        max_sdk_version = serializers.CharField(max_length=32, required=False, allow_blank=True)
        notes = serializers.CharField(required=False, allow_blank=True, default="")
        metrics = JsonObjectField(required=False, default=dict)

    @extend_schema(responses=ModelVersionOutputSerializer(many=True))
    def get(self, request, flow_id):
        flow = selectors.flow_get(flow_id=flow_id)
        versions = selectors.model_version_list(flow=flow)
        context = {"base_url": _base_url(request)}
        return Response(ModelVersionOutputSerializer(versions, many=True, context=context).data)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: ModelVersionOutputSerializer,
            200: OpenApiResponse(
                ModelVersionOutputSerializer, description="The flow has these bytes already."
            ),
            409: error_response(409, "The storage holds other bytes under this file's key."),
            503: error_response(503, "storage_unavailable: nothing was stored; try again."),
        },
    )
    def post(self, request, flow_id):
        flow = selectors.flow_get(flow_id=flow_id)
        data = validated(self.InputSerializer, request.data)
        upload = data.pop("file")
        version, created = services.model_version_upload(
            flow=flow, file=upload, filename=upload.name, uploaded_by=request.user, **data
        )
        body = ModelVersionOutputSerializer(version, context={"base_url": _base_url(request)}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ModelVersionDetailApi(APIView):
    @extend_schema(responses=ModelVersionOutputSerializer)
    def get(self, request, model_id):
        version = selectors.model_version_get(model_id=model_id)
        body = ModelVersionOutputSerializer(version, context={"base_url": _base_url(request)}).data
        return Response(body)


class FlowBaselineSetApi(APIView):
    write_roles = BASELINE_SETTERS

    class InputSerializer(serializers.Serializer):
        model_id = serializers.UUIDField()
        reason = serializers.CharField(
            required=False, allow_blank=True, default="", max_length=2000
        )

    @extend_schema(request=InputSerializer, responses=FlowOutputSerializer)
    def post(self, request, flow_id):
        flow = selectors.flow_get(flow_id=flow_id)
        data = validated(self.InputSerializer, request.data)
        version = selectors.model_version_get(model_id=data["model_id"], flow=flow)
        flow = services.flow_baseline_set(
            flow=flow,
            model_version=version,
            actor=actor_for_request(request),
            reason=data["reason"],
        )
        return Response(FlowOutputSerializer(flow).data)
